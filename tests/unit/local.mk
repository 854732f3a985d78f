# Unit tests (cmocka) for src/: one test_<module>.c per src/<module>.c.
UNIT_TESTS = tests/unit/test_config tests/unit/test_sock tests/unit/test_admin tests/unit/test_appscrape tests/unit/test_tunnel tests/unit/test_tunnel_mtls \
	tests/unit/test_snapshot tests/unit/test_log tests/unit/test_pool tests/unit/test_metrics tests/unit/test_ltab tests/unit/test_telemetry tests/unit/test_proto \
	tests/unit/test_json_pb tests/unit/test_model tests/unit/test_resources tests/unit/test_lb tests/unit/test_identity \
	tests/unit/test_grpc tests/unit/test_sds tests/unit/test_sniff tests/unit/test_peerauth tests/unit/test_authz tests/unit/test_certsrc tests/unit/test_devca tests/unit/test_xtls \
	tests/unit/test_xds_node tests/unit/test_ondemand \
	tests/unit/test_xds_store tests/unit/test_xds_state tests/unit/test_proxyv2 \
	tests/unit/test_h2s tests/unit/test_hbone tests/unit/test_hbone_pool tests/unit/test_accesslog tests/unit/test_conn
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
EXTRA_DIST += tests/unit/testlo.h tests/unit/testbait.h tests/unit/xtls-certs.py
UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
UNIT_LDADD = $(OUTRIGGER_LIBS) $(CMOCKA_LIBS)

tests_unit_test_ondemand_SOURCES = tests/unit/test_ondemand.c
tests_unit_test_ondemand_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_ondemand_LDADD = $(UNIT_LDADD)
# The xDS client's subscriptions are recorded by the test.
tests_unit_test_ondemand_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=xds_subscribe,--wrap=xds_unsubscribe
$(tests_unit_test_ondemand_OBJECTS): $(PROTO_H)
tests_unit_test_hbone_pool_SOURCES = tests/unit/test_hbone_pool.c
tests_unit_test_hbone_pool_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_hbone_pool_LDADD = $(UNIT_LDADD)
# The pool's sessions are the test's (h2s.h's client side, wrapped).
tests_unit_test_hbone_pool_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=h2s_client_new,--wrap=h2s_connect,--wrap=h2s_status \
	-Wl,--wrap=h2s_can_open,--wrap=h2s_streams,--wrap=h2s_close,--wrap=h2s_stream_move
tests_unit_test_xds_node_SOURCES = tests/unit/test_xds_node.c
tests_unit_test_xds_node_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_xds_node_LDADD = $(UNIT_LDADD)
tests_unit_test_config_SOURCES = tests/unit/test_config.c
tests_unit_test_config_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_config_LDADD = $(UNIT_LDADD)
tests_unit_test_sock_SOURCES = tests/unit/test_sock.c
tests_unit_test_sock_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sock_LDADD = $(UNIT_LDADD)
tests_unit_test_admin_SOURCES = tests/unit/test_admin.c
tests_unit_test_appscrape_SOURCES = tests/unit/test_appscrape.c
tests_unit_test_appscrape_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_appscrape_LDADD = $(UNIT_LDADD)
tests_unit_test_admin_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_admin_LDADD = $(UNIT_LDADD)
tests_unit_test_tunnel_SOURCES = tests/unit/test_tunnel.c
tests_unit_test_tunnel_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_tunnel_LDADD = $(UNIT_LDADD)
# Allocation-failure injection for src/ (see __wrap_malloc in the test).
tests_unit_test_tunnel_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=malloc,--wrap=calloc
tests_unit_test_tunnel_mtls_SOURCES = tests/unit/test_tunnel_mtls.c
tests_unit_test_tunnel_mtls_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_tunnel_mtls_LDADD = $(UNIT_LDADD) -lpthread
tests_unit_test_snapshot_SOURCES = tests/unit/test_snapshot.c
tests_unit_test_snapshot_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_snapshot_LDADD = $(UNIT_LDADD)
tests_unit_test_accesslog_SOURCES = tests/unit/test_accesslog.c
tests_unit_test_accesslog_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_accesslog_LDADD = $(UNIT_LDADD)
tests_unit_test_log_SOURCES = tests/unit/test_log.c
tests_unit_test_log_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_log_LDADD = $(UNIT_LDADD)
tests_unit_test_conn_SOURCES = tests/unit/test_conn.c
tests_unit_test_conn_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_conn_LDADD = $(UNIT_LDADD)
tests_unit_test_pool_SOURCES = tests/unit/test_pool.c
tests_unit_test_pool_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_pool_LDADD = $(UNIT_LDADD)
tests_unit_test_metrics_SOURCES = tests/unit/test_metrics.c
tests_unit_test_metrics_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_metrics_LDADD = $(UNIT_LDADD)
tests_unit_test_grpc_SOURCES = tests/unit/test_grpc.c
tests_unit_test_grpc_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_grpc_LDADD = $(UNIT_LDADD)
# Name resolution is wrapped: a name with a refusing first address.
tests_unit_test_grpc_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=getaddrinfo
tests_unit_test_sniff_SOURCES = tests/unit/test_sniff.c
tests_unit_test_sniff_CPPFLAGS = $(AM_CPPFLAGS) -DSNIFF_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit/golden/sniff"'
tests_unit_test_sniff_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sniff_LDADD = $(UNIT_LDADD)
EXTRA_DIST += tests/unit/golden/sniff
tests_unit_test_peerauth_SOURCES = tests/unit/test_peerauth.c
tests_unit_test_peerauth_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_peerauth_LDADD = $(UNIT_LDADD)
$(tests_unit_test_peerauth_OBJECTS): $(PROTO_H)
tests_unit_test_authz_SOURCES = tests/unit/test_authz.c
tests_unit_test_authz_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_authz_LDADD = $(UNIT_LDADD)
$(tests_unit_test_authz_OBJECTS): $(PROTO_H)
tests_unit_test_identity_SOURCES = tests/unit/test_identity.c
tests_unit_test_identity_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_identity_LDADD = $(UNIT_LDADD)
tests_unit_test_sds_SOURCES = tests/unit/test_sds.c
tests_unit_test_sds_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sds_LDADD = $(UNIT_LDADD)
$(tests_unit_test_sds_OBJECTS): $(PROTO_H)
tests_unit_test_certsrc_SOURCES = tests/unit/test_certsrc.c
tests_unit_test_certsrc_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_certsrc_LDADD = $(UNIT_LDADD)
tests_unit_test_devca_SOURCES = tests/unit/test_devca.c
tests_unit_test_devca_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_devca_LDADD = $(UNIT_LDADD)
tests_unit_test_lb_SOURCES = tests/unit/test_lb.c
tests_unit_test_lb_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_lb_LDADD = $(UNIT_LDADD)
$(tests_unit_test_lb_OBJECTS): $(PROTO_H)
tests_unit_test_proto_SOURCES = tests/unit/test_proto.c
tests_unit_test_proto_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_proto_LDADD = $(UNIT_LDADD)
$(tests_unit_test_proto_OBJECTS): $(PROTO_H)
tests_unit_test_model_SOURCES = tests/unit/test_model.c
tests_unit_test_model_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_model_LDADD = $(UNIT_LDADD)
# Allocation-failure injection for model_build (see __wrap_malloc in the test).
tests_unit_test_model_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(tests_unit_test_model_OBJECTS): $(PROTO_H)
tests_unit_test_resources_SOURCES = tests/unit/test_resources.c
tests_unit_test_resources_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_resources_LDADD = $(UNIT_LDADD)
$(tests_unit_test_resources_OBJECTS): $(PROTO_H)

# The decoder's test message, generated by protoc-c as src/proto's files are
# (imports resolved against src/proto, where the well-known types are ours).
# Goldens in tests/unit/golden/jpb/ were made from the same .proto by a real
# implementation (make.py, Python google.protobuf).
JPBTEST_C = tests/unit/proto/jpbtest.pb-c.c
JPBTEST_H = tests/unit/proto/jpbtest.pb-c.h
$(JPBTEST_H): $(JPBTEST_C)
	@test -f $@ || { rm -f $(JPBTEST_C); $(MAKE) $(AM_MAKEFLAGS) $(JPBTEST_C); }
$(JPBTEST_C): tests/unit/proto/jpbtest.proto $(PROTO_FILES)
	@$(MKDIR_P) tests/unit/proto
	$(AM_V_GEN)$(PROTOC_C) --c_out=tests/unit/proto -I$(srcdir)/src/proto \
		-I$(srcdir)/tests/unit/proto $(srcdir)/tests/unit/proto/jpbtest.proto
BUILT_SOURCES += $(JPBTEST_C) $(JPBTEST_H)
CLEANFILES += $(JPBTEST_C) $(JPBTEST_H)
EXTRA_DIST += tests/unit/proto/jpbtest.proto tests/unit/golden/jpb tests/unit/jpb-golden-check.sh
TESTS += tests/unit/jpb-golden-check.sh
noinst_LIBRARIES += libjpbtest.a
nodist_libjpbtest_a_SOURCES = $(JPBTEST_C) $(JPBTEST_H)
libjpbtest_a_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_builddir)/tests/unit/proto

tests_unit_test_json_pb_SOURCES = tests/unit/test_json_pb.c
tests_unit_test_json_pb_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_builddir)/tests/unit/proto \
	-DJPB_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit/golden/jpb"' \
	-DPB_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit/golden/pb"'
tests_unit_test_json_pb_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_json_pb_LDADD = libjpbtest.a $(UNIT_LDADD)
# As for test_proto: the generated headers exist before these compile.
$(libjpbtest_a_OBJECTS): $(PROTO_H)
$(tests_unit_test_json_pb_OBJECTS): $(PROTO_H) $(JPBTEST_H)

# TLS: certificates made at run time by the openssl CLI (tests/lab/certs.py).
tests_unit_test_xtls_SOURCES = tests/unit/test_xtls.c
tests_unit_test_xtls_CPPFLAGS = $(AM_CPPFLAGS) -DXTLS_UNIT_DIR='"$(abs_top_srcdir)/tests/unit"' \
	-DXTLS_LAB_DIR='"$(abs_top_srcdir)/tests/lab"'
tests_unit_test_xtls_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_xtls_LDADD = $(UNIT_LDADD)

# The xDS store: responses packed here, and goldens encoded by Python's
# protobuf from the real Envoy protos (make.py; xds-golden-check.sh re-makes
# them and compares).
tests_unit_test_xds_store_SOURCES = tests/unit/test_xds_store.c
tests_unit_test_xds_store_CPPFLAGS = $(AM_CPPFLAGS) -DXDS_GOLDEN_DIR='"$(abs_top_srcdir)/tests/unit/golden/xds"'
tests_unit_test_xds_store_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_xds_store_LDADD = $(UNIT_LDADD)
# Allocation-failure injection (see __wrap_malloc in the test).
tests_unit_test_xds_store_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc
$(tests_unit_test_xds_store_OBJECTS): $(PROTO_H)
EXTRA_DIST += tests/unit/golden/xds tests/unit/xds-golden-check.sh
TESTS += tests/unit/xds-golden-check.sh
tests_unit_test_xds_state_SOURCES = tests/unit/test_xds_state.c
tests_unit_test_xds_state_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_xds_state_LDADD = $(UNIT_LDADD)
$(tests_unit_test_xds_state_OBJECTS): $(PROTO_H)
tests_unit_test_proxyv2_SOURCES = tests/unit/test_proxyv2.c
tests_unit_test_proxyv2_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_proxyv2_LDADD = $(UNIT_LDADD)

tests_unit_test_h2s_SOURCES = tests/unit/test_h2s.c
tests_unit_test_h2s_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_h2s_LDADD = $(UNIT_LDADD)
tests_unit_test_hbone_SOURCES = tests/unit/test_hbone.c
tests_unit_test_hbone_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_hbone_LDADD = $(UNIT_LDADD)
tests_unit_test_ltab_SOURCES = tests/unit/test_ltab.c
tests_unit_test_ltab_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_ltab_LDADD = $(UNIT_LDADD)
tests_unit_test_telemetry_SOURCES = tests/unit/test_telemetry.c
tests_unit_test_telemetry_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_telemetry_LDADD = $(UNIT_LDADD)
$(tests_unit_test_telemetry_OBJECTS): $(PROTO_H)
