# src/: the proxy. Everything but main.c goes into a convenience library that
# the binary, the unit tests and the fuzz targets link.
noinst_LIBRARIES += liboutrigger.a
liboutrigger_a_SOURCES = \
	src/admin.c src/admin.h \
	src/config.c src/config.h \
	src/conn.c src/conn.h src/conn-t.h \
	src/flow.c src/flow.h \
	src/log.c src/log.h \
	src/metrics.c src/metrics.h \
	src/pool.c src/pool.h \
	src/server.c src/server.h \
	src/snapshot.c src/snapshot.h \
	src/sock.c src/sock.h \
	src/strbuf.c src/strbuf.h \
	src/tunnel.c src/tunnel.h \
	src/worker.c src/worker.h src/worker-t.h

OUTRIGGER_LIBS = liboutrigger.a $(LIBEV_LIBS) $(CJSON_LIBS) $(OPENSSL_LIBS) \
	$(NGHTTP2_LIBS) $(PROTOBUFC_LIBS) $(LLHTTP_LIBS) -lm

sbin_PROGRAMS += outrigger
outrigger_SOURCES = src/main.c
outrigger_LDADD = $(OUTRIGGER_LIBS)

if LLHTTP_BUNDLED
# llhttp from its C sources (Debian's node-llhttp ships them, no library).
noinst_LIBRARIES += libllhttp.a
libllhttp_a_SOURCES = src/llhttp_bundle_llhttp.c src/llhttp_bundle_api.c src/llhttp_bundle_http.c
libllhttp_a_CPPFLAGS = -I$(LLHTTP_SRCDIR) $(LLHTTP_CFLAGS)
libllhttp_a_CFLAGS = -std=gnu11 -w $(SAN_CFLAGS) $(FUZZ_CFLAGS)
OUTRIGGER_LIBS += libllhttp.a
endif
