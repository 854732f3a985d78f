# Fuzz targets, one per parser of untrusted input, each with a seed corpus.
#   ./configure --enable-fuzzing CC=clang && make fuzz   (libFuzzer binaries)
# In every other build, `make check` replays the seed corpora through them.
FUZZ_TARGETS = config admin init json_pb model grpc cert sds sniff tls xrec ondemand xds hbone authz appscrape

if FUZZING
noinst_PROGRAMS += tests/fuzz/fuzz_config tests/fuzz/fuzz_admin tests/fuzz/fuzz_init tests/fuzz/fuzz_json_pb \
	tests/fuzz/fuzz_model tests/fuzz/fuzz_grpc tests/fuzz/fuzz_cert tests/fuzz/fuzz_sds tests/fuzz/fuzz_sniff tests/fuzz/fuzz_tls tests/fuzz/fuzz_xrec \
	tests/fuzz/fuzz_ondemand tests/fuzz/fuzz_xds tests/fuzz/fuzz_hbone tests/fuzz/fuzz_authz tests/fuzz/fuzz_appscrape
# The app's answer to the status port's scrape (src/appscrape.c), and ISTIO_PROMETHEUS_ANNOTATIONS.
tests_fuzz_fuzz_appscrape_SOURCES = tests/fuzz/fuzz_appscrape.c
tests_fuzz_fuzz_appscrape_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_appscrape_LDADD = $(OUTRIGGER_LIBS)
# The authorization evaluator (src/authz.c): policies and workloads as JSON resources.
tests_fuzz_fuzz_authz_SOURCES = tests/fuzz/fuzz_authz.c
tests_fuzz_fuzz_authz_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_authz_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_fuzz_authz_OBJECTS): $(PROTO_H)
# The HBONE server's front end (src/h2s.c, src/hbone.c): HTTP/2 frames after the preface.
tests_fuzz_fuzz_hbone_SOURCES = tests/fuzz/fuzz_hbone.c
tests_fuzz_fuzz_hbone_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_hbone_LDADD = $(OUTRIGGER_LIBS)
# The names an xDS server answers on-demand lookups with (src/ondemand.c).
tests_fuzz_fuzz_ondemand_SOURCES = tests/fuzz/fuzz_ondemand.c
tests_fuzz_fuzz_ondemand_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer -Wl,--wrap=xds_subscribe,--wrap=xds_unsubscribe
tests_fuzz_fuzz_ondemand_LDADD = $(OUTRIGGER_LIBS)
# xDS responses (src/xds_store.c): decoded, applied into a store, built.
tests_fuzz_fuzz_xds_SOURCES = tests/fuzz/fuzz_xds.c
tests_fuzz_fuzz_xds_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_xds_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_fuzz_xds_OBJECTS): $(PROTO_H)
# The peek-based protocol detection (src/sniff.c): first bytes on 15006.
tests_fuzz_fuzz_sniff_SOURCES = tests/fuzz/fuzz_sniff.c
tests_fuzz_fuzz_sniff_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_sniff_LDADD = $(OUTRIGGER_LIBS)
# What a TLS 1.3 peer sends our record layer after the handshake (src/xrec.c).
tests_fuzz_fuzz_xrec_SOURCES = tests/fuzz/fuzz_xrec.c
tests_fuzz_fuzz_xrec_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_xrec_LDADD = $(OUTRIGGER_LIBS)
# What a TLS client sends our server conn (src/xtls.c).
tests_fuzz_fuzz_tls_SOURCES = tests/fuzz/fuzz_tls.c
tests_fuzz_fuzz_tls_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_tls_LDADD = $(OUTRIGGER_LIBS)
# Certificates and SPIFFE IDs (src/identity.c): PEM bundles, DER, URIs.
tests_fuzz_fuzz_cert_SOURCES = tests/fuzz/fuzz_cert.c
tests_fuzz_fuzz_cert_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_cert_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_fuzz_sds_SOURCES = tests/fuzz/fuzz_sds.c
tests_fuzz_fuzz_sds_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_sds_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_fuzz_grpc_SOURCES = tests/fuzz/fuzz_grpc.c
tests_fuzz_fuzz_grpc_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_grpc_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_fuzz_config_SOURCES = tests/fuzz/fuzz_config.c
tests_fuzz_fuzz_config_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_config_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_fuzz_admin_SOURCES = tests/fuzz/fuzz_admin.c
tests_fuzz_fuzz_admin_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_admin_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_fuzz_init_SOURCES = tests/fuzz/fuzz_init.c
tests_fuzz_fuzz_init_CPPFLAGS = $(INIT_CPPFLAGS)
tests_fuzz_fuzz_init_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_init_LDADD = libinit.a
# The JSON decoder's target decodes into the unit tests' jpbtest message.
tests_fuzz_fuzz_json_pb_SOURCES = tests/fuzz/fuzz_json_pb.c
tests_fuzz_fuzz_json_pb_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_builddir)/tests/unit/proto
tests_fuzz_fuzz_json_pb_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_json_pb_LDADD = libjpbtest.a $(OUTRIGGER_LIBS)
$(tests_fuzz_fuzz_json_pb_OBJECTS): $(PROTO_H) $(JPBTEST_H)
# The snapshot builder's target: {"resources": [...]} through the decoder.
tests_fuzz_fuzz_model_SOURCES = tests/fuzz/fuzz_model.c
tests_fuzz_fuzz_model_LDFLAGS = $(AM_LDFLAGS) -fsanitize=fuzzer
tests_fuzz_fuzz_model_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_fuzz_model_OBJECTS): $(PROTO_H)
fuzz: tests/fuzz/fuzz_config tests/fuzz/fuzz_admin tests/fuzz/fuzz_init tests/fuzz/fuzz_json_pb \
	tests/fuzz/fuzz_model tests/fuzz/fuzz_grpc tests/fuzz/fuzz_cert tests/fuzz/fuzz_sds tests/fuzz/fuzz_sniff tests/fuzz/fuzz_tls tests/fuzz/fuzz_xrec \
	tests/fuzz/fuzz_ondemand tests/fuzz/fuzz_xds tests/fuzz/fuzz_hbone tests/fuzz/fuzz_authz tests/fuzz/fuzz_appscrape
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz-corpus/$$t && \
	  tests/fuzz/fuzz_$$t -max_total_time=$${FUZZ_SECONDS:-60} -dict=$(srcdir)/tests/fuzz/$$t.dict \
	    fuzz-corpus/$$t $(srcdir)/tests/fuzz/corpus/$$t || exit 1; \
	done
else
check_PROGRAMS += tests/fuzz/replay_config tests/fuzz/replay_admin tests/fuzz/replay_init \
	tests/fuzz/replay_json_pb tests/fuzz/replay_model tests/fuzz/replay_grpc tests/fuzz/replay_cert tests/fuzz/replay_sds tests/fuzz/replay_sniff \
	tests/fuzz/replay_tls tests/fuzz/replay_xrec tests/fuzz/replay_ondemand tests/fuzz/replay_xds tests/fuzz/replay_hbone tests/fuzz/replay_authz \
	tests/fuzz/replay_appscrape
tests_fuzz_replay_appscrape_SOURCES = tests/fuzz/fuzz_appscrape.c tests/fuzz/replay.c
tests_fuzz_replay_appscrape_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_authz_SOURCES = tests/fuzz/fuzz_authz.c tests/fuzz/replay.c
tests_fuzz_replay_authz_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_replay_authz_OBJECTS): $(PROTO_H)
tests_fuzz_replay_hbone_SOURCES = tests/fuzz/fuzz_hbone.c tests/fuzz/replay.c
tests_fuzz_replay_hbone_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_ondemand_SOURCES = tests/fuzz/fuzz_ondemand.c tests/fuzz/replay.c
tests_fuzz_replay_ondemand_LDFLAGS = $(AM_LDFLAGS) -Wl,--wrap=xds_subscribe,--wrap=xds_unsubscribe
tests_fuzz_replay_ondemand_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_xds_SOURCES = tests/fuzz/fuzz_xds.c tests/fuzz/replay.c
tests_fuzz_replay_xds_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_replay_xds_OBJECTS): $(PROTO_H)
tests_fuzz_replay_sds_SOURCES = tests/fuzz/fuzz_sds.c tests/fuzz/replay.c
tests_fuzz_replay_sds_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_xrec_SOURCES = tests/fuzz/fuzz_xrec.c tests/fuzz/replay.c
tests_fuzz_replay_xrec_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_tls_SOURCES = tests/fuzz/fuzz_tls.c tests/fuzz/replay.c
tests_fuzz_replay_tls_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_grpc_SOURCES = tests/fuzz/fuzz_grpc.c tests/fuzz/replay.c
tests_fuzz_replay_grpc_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_sniff_SOURCES = tests/fuzz/fuzz_sniff.c tests/fuzz/replay.c
tests_fuzz_replay_sniff_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_cert_SOURCES = tests/fuzz/fuzz_cert.c tests/fuzz/replay.c
tests_fuzz_replay_cert_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_model_SOURCES = tests/fuzz/fuzz_model.c tests/fuzz/replay.c
tests_fuzz_replay_model_LDADD = $(OUTRIGGER_LIBS)
$(tests_fuzz_replay_model_OBJECTS): $(PROTO_H)
tests_fuzz_replay_json_pb_SOURCES = tests/fuzz/fuzz_json_pb.c tests/fuzz/replay.c
tests_fuzz_replay_json_pb_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_builddir)/tests/unit/proto
tests_fuzz_replay_json_pb_LDADD = libjpbtest.a $(OUTRIGGER_LIBS)
$(tests_fuzz_replay_json_pb_OBJECTS): $(PROTO_H) $(JPBTEST_H)
tests_fuzz_replay_config_SOURCES = tests/fuzz/fuzz_config.c tests/fuzz/replay.c
tests_fuzz_replay_config_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_admin_SOURCES = tests/fuzz/fuzz_admin.c tests/fuzz/replay.c
tests_fuzz_replay_admin_LDADD = $(OUTRIGGER_LIBS)
tests_fuzz_replay_init_SOURCES = tests/fuzz/fuzz_init.c tests/fuzz/replay.c
tests_fuzz_replay_init_CPPFLAGS = $(INIT_CPPFLAGS)
tests_fuzz_replay_init_LDADD = libinit.a
TESTS += tests/fuzz/replay-corpora.sh
endif
EXTRA_DIST += tests/fuzz/corpus tests/fuzz/config.dict tests/fuzz/admin.dict tests/fuzz/init.dict tests/fuzz/json_pb.dict \
	tests/fuzz/model.dict tests/fuzz/grpc.dict tests/fuzz/cert.dict tests/fuzz/sds.dict tests/fuzz/sniff.dict tests/fuzz/tls.dict tests/fuzz/xrec.dict tests/fuzz/ondemand.dict tests/fuzz/xds.dict tests/fuzz/hbone.dict tests/fuzz/authz.dict tests/fuzz/appscrape.dict tests/fuzz/make-hbone-corpus.py tests/fuzz/make-sds-corpus.py tests/fuzz/replay-corpora.sh
.PHONY: fuzz
