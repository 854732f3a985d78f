# src/: the proxy. Everything but main.c goes into a convenience library that
# the binary, the unit tests and the fuzz targets link.
noinst_LIBRARIES += liboutrigger.a
liboutrigger_a_SOURCES = \
	src/admin.c src/admin.h \
	src/appscrape.c src/appscrape.h \
	src/authz.c src/authz.h \
	src/config.c src/config.h \
	src/ca.c \
	src/ctltarget.c src/ctltarget.h \
	src/certsrc.c src/certsrc_files.c \
	src/conn.c src/conn.h src/conn-t.h src/readyq.c src/readyq.h \
	src/flow.c src/flow.h \
	src/devca.c src/devca.h \
	src/grpc.c src/grpc.h \
	src/h2s.c src/h2s.h src/hbone.c src/hbone.h src/hbone_server.c \
	src/identity.c src/identity.h \
	src/json.c src/json.h \
	src/json_pb.c src/json_pb.h \
	src/lb.c src/lb.h \
	src/log.c src/log.h \
	src/accesslog.c src/accesslog.h \
	src/metrics.c src/metrics.h \
	src/ltab.c src/ltab.h \
	src/model.c src/model.h \
	src/model_eds.c src/model_eds.h \
	src/ondemand.c src/ondemand.h \
	src/pb.c src/pb.h \
	src/peerauth.c src/peerauth.h \
	src/pool.c src/pool.h \
	src/proxyv2.c src/proxyv2.h \
	src/resources.c src/resources.h \
	src/sds.c src/sds.h \
	src/server.c src/server.h \
	src/snapshot.c src/snapshot.h \
	src/sniff.c src/sniff.h \
	src/sock.c src/sock.h \
	src/strbuf.c src/strbuf.h \
	src/telemetry.c src/telemetry.h \
	src/tunnel.c src/tunnel.h \
	src/worker.c src/worker.h src/worker-t.h \
	src/xds.c src/xds.h src/xds_node.c \
	src/xds_state.c src/xds_state.h \
	src/xds_store.c src/xds_store.h \
	src/xtls.c src/xtls.h src/xrec.c src/xrec.h \
	src/hbone_pool.c \
	src/certsrc.h

OUTRIGGER_LIBS = liboutrigger.a libproto.a $(LIBEV_LIBS) $(CJSON_LIBS) $(OPENSSL_LIBS) \
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

# src/proto/: our own .proto files (wire-compatible with Istio's and Envoy's,
# see HACKING.md). protoc-c turns them into C in the build tree at build time
# (src/proto/<path>.pb-c.c/.h under $(builddir)); they are compiled into
# libproto.a, which every binary that links liboutrigger.a links too. The
# google/protobuf well-known types are ours as well, so the generated C for
# them exists (and is linked) exactly once, whatever protoc installation the
# build machine has.
PROTO_FILES = \
	src/proto/envoy/config/cluster/v3/circuit_breaker.proto \
	src/proto/envoy/config/cluster/v3/cluster.proto \
	src/proto/envoy/config/core/v3/address.proto \
	src/proto/envoy/config/core/v3/base.proto \
	src/proto/envoy/config/core/v3/config_source.proto \
	src/proto/envoy/config/core/v3/extension.proto \
	src/proto/envoy/config/core/v3/health_check.proto \
	src/proto/envoy/config/endpoint/v3/endpoint.proto \
	src/proto/envoy/config/endpoint/v3/endpoint_components.proto \
	src/proto/envoy/config/listener/v3/listener.proto \
	src/proto/envoy/config/listener/v3/listener_components.proto \
	src/proto/envoy/config/route/v3/route.proto \
	src/proto/envoy/config/route/v3/route_components.proto \
	src/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto \
	src/proto/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto \
	src/proto/envoy/extensions/transport_sockets/tls/v3/common.proto \
	src/proto/envoy/extensions/transport_sockets/tls/v3/secret.proto \
	src/proto/envoy/service/discovery/v3/discovery.proto \
	src/proto/envoy/service/secret/v3/sds.proto \
	src/proto/envoy/type/matcher/v3/regex.proto \
	src/proto/envoy/type/matcher/v3/string.proto \
	src/proto/envoy/type/v3/percent.proto \
	src/proto/envoy/type/v3/range.proto \
	src/proto/envoy/type/v3/semantic_version.proto \
	src/proto/google/protobuf/any.proto \
	src/proto/google/protobuf/duration.proto \
	src/proto/google/protobuf/empty.proto \
	src/proto/google/protobuf/struct.proto \
	src/proto/google/protobuf/timestamp.proto \
	src/proto/google/protobuf/wrappers.proto \
	src/proto/google/rpc/status.proto \
	src/proto/istio/security/authorization.proto \
	src/proto/istio/security/v1alpha1/ca.proto \
	src/proto/istio/security/v1beta1/peer_authentication.proto \
	src/proto/istio/type/v1beta1/selector.proto \
	src/proto/istio/workload/workload.proto \
	src/proto/outrigger/xds_state.proto \
	src/proto/xds/core/v3/context_params.proto
PROTO_C = $(PROTO_FILES:.proto=.pb-c.c)
PROTO_H = $(PROTO_FILES:.proto=.pb-c.h)

# One protoc-c run generates every file (imports are resolved against
# src/proto only); a stamp stands for the whole set so parallel make runs it
# once (the automake manual's "multiple outputs" recipe).
src/proto/proto.stamp: $(PROTO_FILES)
	@rm -f $@.tmp
	@$(MKDIR_P) src/proto
	@touch $@.tmp
	$(AM_V_GEN)$(PROTOC_C) --c_out=src/proto -I$(srcdir)/src/proto \
		$(PROTO_FILES:%=$(srcdir)/%)
	@mv -f $@.tmp $@
$(PROTO_C) $(PROTO_H): src/proto/proto.stamp
	@test -f $@ || rm -f src/proto/proto.stamp
	@test -f $@ || $(MAKE) $(AM_MAKEFLAGS) src/proto/proto.stamp

noinst_LIBRARIES += libproto.a
nodist_libproto_a_SOURCES = $(PROTO_C) $(PROTO_H)
BUILT_SOURCES = $(PROTO_C) $(PROTO_H)
CLEANFILES += $(PROTO_C) $(PROTO_H) src/proto/proto.stamp
EXTRA_DIST += $(PROTO_FILES)
# Sources that include generated headers must wait for them even when a
# single target is asked for (`make outrigger`: BUILT_SOURCES only applies to
# all, check and install) and before dependency tracking knows about them.
$(liboutrigger_a_OBJECTS): $(PROTO_H)
