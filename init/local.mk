# outrigger-init: the interception helper (a drop-in for istio-iptables).
# Sources are built once into libinit.a; the program and the unit tests link
# it.  init/ needs only libc and the proxy's text buffer: src/strbuf.c is
# compiled into libinit.a, so outrigger-init does not link liboutrigger.a.
# It takes its own CPPFLAGS, not AM_CPPFLAGS with the proxy's library flags;
# -I $(top_builddir) is for autoconfig.h.
INIT_CPPFLAGS = -I$(top_srcdir)/init -I$(top_srcdir)/src -I$(top_builddir)

noinst_LIBRARIES += libinit.a
libinit_a_CPPFLAGS = $(INIT_CPPFLAGS)
libinit_a_SOURCES = \
	init/apply.c init/apply.h \
	init/exec.c init/exec.h \
	init/flags.c init/flags.h \
	init/ilog.c init/ilog.h \
	init/nft.c init/nft.h \
	init/podinfo.c init/podinfo.h \
	init/rules.c init/rules.h \
	init/tproxy.c init/tproxy.h \
	init/validate.c init/validate.h \
	src/strbuf.c src/strbuf.h

sbin_PROGRAMS += outrigger-init
outrigger_init_CPPFLAGS = $(INIT_CPPFLAGS)
outrigger_init_SOURCES = init/main.c
outrigger_init_LDADD = libinit.a

# Unit tests (cmocka).  Golden files are found through $GOLDEN_DIR or the
# $srcdir the test harness exports, so VPATH builds (distcheck) work.
INIT_TESTS = \
	tests/unit/test_init_flags \
	tests/unit/test_init_rules \
	tests/unit/test_init_nft
check_PROGRAMS += $(INIT_TESTS)
TESTS += $(INIT_TESTS)

INIT_TEST_CPPFLAGS = $(INIT_CPPFLAGS) $(CMOCKA_CFLAGS)
INIT_TEST_LDADD = libinit.a $(CMOCKA_LIBS)
tests_unit_test_init_flags_SOURCES = tests/unit/test_init_flags.c
tests_unit_test_init_flags_CPPFLAGS = $(INIT_TEST_CPPFLAGS)
tests_unit_test_init_flags_LDADD = $(INIT_TEST_LDADD)
tests_unit_test_init_rules_SOURCES = tests/unit/test_init_rules.c tests/unit/test_init_common.h
tests_unit_test_init_rules_CPPFLAGS = $(INIT_TEST_CPPFLAGS)
tests_unit_test_init_rules_LDADD = $(INIT_TEST_LDADD)
tests_unit_test_init_nft_SOURCES = tests/unit/test_init_nft.c tests/unit/test_init_common.h
tests_unit_test_init_nft_CPPFLAGS = $(INIT_TEST_CPPFLAGS)
tests_unit_test_init_nft_LDADD = $(INIT_TEST_LDADD)

EXTRA_DIST += tests/unit/golden
