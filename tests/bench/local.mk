# Benchmarks (tests/bench): not part of `make`, `make check` or `make distcheck`
# (but for bench_model, which `make` builds, below).
# `make bench` builds an optimised copy out of tree (run.sh) and runs every scenario
# against every contender; `make bench-smoke` does the same in seconds (CI: proves the
# harness works, asserts nothing about speed). Both need root.
BENCH_FILES = \
	tests/bench/README.md tests/bench/run.sh tests/bench/orbench.py \
	tests/bench/benchlib.py tests/bench/report.py \
	tests/bench/orbench-load.c tests/bench/orbench-server.c \
	tests/bench/contenders/direct.py tests/bench/contenders/outrigger.py \
	tests/bench/contenders/haproxy.py tests/bench/contenders/nginx.py \
	tests/bench/contenders/outrigger_prev.py \
	tests/bench/contenders/outrigger_mtls.py tests/bench/contenders/haproxy_mtls.py \
	tests/bench/mtlspki.py tests/bench/scenarios/mtls.py \
	tests/bench/scenarios/bulk1.py tests/bench/scenarios/bulk64.py \
	tests/bench/scenarios/pingpong.py tests/bench/scenarios/connect.py \
	tests/bench/scenarios/closeserver.py tests/bench/scenarios/closeclient.py \
	tests/bench/scenarios/idle.py tests/bench/bench-model.sh tests/bench/bench-telemetry.sh tests/bench/bench-xtls.sh \
	tests/bench/bench-xds.sh tests/bench/xdspush.py tests/bench/ondemand.py tests/bench/ondemand_cp.py \
	tests/bench/contenders/outrigger_hbone.py tests/bench/contenders/nghttpx_hbone.py \
	tests/bench/scenarios/hbone.py tests/bench/bench-hbone.sh
EXTRA_DIST += $(BENCH_FILES)

# The model's build benchmark (issue 8, "Performance"): built by `make` with
# the tree's flags so it keeps compiling, never run by `make check`;
# `make bench-model` builds it optimised by hand and runs it.
noinst_PROGRAMS += tests/bench/bench_model
tests_bench_bench_model_SOURCES = tests/bench/bench_model.c
tests_bench_bench_model_LDADD = $(OUTRIGGER_LIBS)
$(tests_bench_bench_model_OBJECTS): $(PROTO_H)

# The control-plane push (issue 10): response bytes -> decode -> store ->
# model -> every worker, in process. Built by `make`; `make bench-xds`
# builds it optimised (bench-xds.sh) and runs it.
noinst_PROGRAMS += tests/bench/bench_xds
tests_bench_bench_xds_SOURCES = tests/bench/bench_xds.c
tests_bench_bench_xds_LDADD = $(OUTRIGGER_LIBS)
$(tests_bench_bench_xds_OBJECTS): $(PROTO_H)

bench-xds:
	$(SHELL) $(top_srcdir)/tests/bench/bench-xds.sh

bench-model:
	$(SHELL) $(top_srcdir)/tests/bench/bench-model.sh

# Memory per idle mTLS connection (issue 9): built by `make` so it keeps
# compiling; `make bench-xtls` builds it without sanitizers and runs it.
noinst_PROGRAMS += tests/bench/bench_xtls
tests_bench_bench_xtls_SOURCES = tests/bench/bench_xtls.c
tests_bench_bench_xtls_LDADD = $(OUTRIGGER_LIBS)

bench-xtls:
	$(SHELL) $(top_srcdir)/tests/bench/bench-xtls.sh

# Memory per idle HBONE stream (issue 11): built by `make` so it keeps
# compiling; `make bench-hbone` builds it without sanitizers and runs it.
noinst_PROGRAMS += tests/bench/bench_hbone
tests_bench_bench_hbone_SOURCES = tests/bench/bench_hbone.c
tests_bench_bench_hbone_LDADD = $(OUTRIGGER_LIBS)

bench-hbone:
	$(SHELL) $(top_srcdir)/tests/bench/bench-hbone.sh

bench:
	$(SHELL) $(top_srcdir)/tests/bench/run.sh

bench-smoke:
	$(SHELL) $(top_srcdir)/tests/bench/run.sh --smoke

.PHONY: bench bench-smoke bench-model bench-authz bench-telemetry bench-xtls bench-xds bench-hbone

# The istio_tcp_* scrape (issue 12): 1,000 label sets over 2 workers, timed
# render. Built by `make`; `make bench-telemetry` builds it optimised and runs it.
noinst_PROGRAMS += tests/bench/bench_telemetry
tests_bench_bench_telemetry_SOURCES = tests/bench/bench_telemetry.c
tests_bench_bench_telemetry_LDADD = $(OUTRIGGER_LIBS)

bench-telemetry:
	$(SHELL) $(top_srcdir)/tests/bench/bench-telemetry.sh

# Authorization per connection (issue 12): authz_check with 100 policies bound
# to the workload against none. Built by `make`; `make bench-authz` builds it
# optimised (bench-model.sh --authz) and runs it.
noinst_PROGRAMS += tests/bench/bench_authz
tests_bench_bench_authz_SOURCES = tests/bench/bench_authz.c
tests_bench_bench_authz_LDADD = $(OUTRIGGER_LIBS)
$(tests_bench_bench_authz_OBJECTS): $(PROTO_H)

bench-authz:
	$(SHELL) $(top_srcdir)/tests/bench/bench-model.sh --authz
