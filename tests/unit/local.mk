# Unit tests (cmocka) for src/: one test_<module>.c per src/<module>.c.
UNIT_TESTS = tests/unit/test_config tests/unit/test_sock tests/unit/test_admin tests/unit/test_tunnel \
	tests/unit/test_snapshot tests/unit/test_log tests/unit/test_pool tests/unit/test_metrics tests/unit/test_proto
check_PROGRAMS += $(UNIT_TESTS)
TESTS += $(UNIT_TESTS)
EXTRA_DIST += tests/unit/testlo.h
UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
UNIT_LDADD = $(OUTRIGGER_LIBS) $(CMOCKA_LIBS)

tests_unit_test_config_SOURCES = tests/unit/test_config.c
tests_unit_test_config_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_config_LDADD = $(UNIT_LDADD)
tests_unit_test_sock_SOURCES = tests/unit/test_sock.c
tests_unit_test_sock_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_sock_LDADD = $(UNIT_LDADD)
tests_unit_test_admin_SOURCES = tests/unit/test_admin.c
tests_unit_test_admin_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_admin_LDADD = $(UNIT_LDADD)
tests_unit_test_tunnel_SOURCES = tests/unit/test_tunnel.c
tests_unit_test_tunnel_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_tunnel_LDADD = $(UNIT_LDADD)
# Allocation-failure injection for src/ (see __wrap_malloc in the test).
tests_unit_test_tunnel_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=malloc,--wrap=calloc
tests_unit_test_snapshot_SOURCES = tests/unit/test_snapshot.c
tests_unit_test_snapshot_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_snapshot_LDADD = $(UNIT_LDADD)
tests_unit_test_log_SOURCES = tests/unit/test_log.c
tests_unit_test_log_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_log_LDADD = $(UNIT_LDADD)
tests_unit_test_pool_SOURCES = tests/unit/test_pool.c
tests_unit_test_pool_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_pool_LDADD = $(UNIT_LDADD)
tests_unit_test_metrics_SOURCES = tests/unit/test_metrics.c
tests_unit_test_metrics_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_metrics_LDADD = $(UNIT_LDADD)
tests_unit_test_proto_SOURCES = tests/unit/test_proto.c
tests_unit_test_proto_CFLAGS = $(UNIT_CFLAGS)
tests_unit_test_proto_LDADD = $(UNIT_LDADD)
$(tests_unit_test_proto_OBJECTS): $(PROTO_H)
