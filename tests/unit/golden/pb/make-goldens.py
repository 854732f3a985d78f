#!/usr/bin/python3
"""Produce the protobuf goldens of tests/unit/test_proto.c with a REAL
protobuf implementation (Debian's python3-protobuf) and the REAL schemas.

Each case is a resource in proto3 JSON (NAME.json, written as given here),
parsed by google.protobuf.json_format against the real upstream schema and
serialized (deterministic) to NAME.bin. The C test decodes NAME.bin with
Outrigger's generated protobuf-c code and asserts every field; the JSON is
the same resource for the JSON decoder's tests. A few cases append fields
the upstream schema has and ours leaves out, or numbers no schema has yet,
or enum values no schema has: they are marked in CASES and in README.md.
NAME.out.json is what json_format.MessageToDict (its defaults) makes of the
message read back from NAME.bin: the JSON encoder's golden.

Inputs (nothing is fetched; see README.md for where they come from):
  --istio-pkg DIR   istio/istio's pkg/ directory (workloadapi/*.proto)
  --istio-api DIR   istio/api's root (security/v1beta1, type/v1beta1)
  --envoy-deps DIR  @grpc/grpc-js-xds's deps/ directory (envoy-api, xds,
                    googleapis, protoc-gen-validate)
  --out DIR         where to write NAME.json / NAME.bin (default: here)
  --check-ours DIR  also run check-schema.py on DIR (src/proto)
Needs protoc (protobuf-compiler), libprotobuf-dev (google/protobuf/*.proto)
and python3-protobuf.
"""
import argparse
import base64
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'lab'))
from envoy_protos import pgv_copy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WKT_INCLUDE = '/usr/include'

ISTIO_FILES = ['workloadapi/workload.proto', 'workloadapi/security/authorization.proto']
ISTIO_API_FILES = ['security/v1beta1/peer_authentication.proto']
ENVOY_FILES = [
    'envoy/config/cluster/v3/cluster.proto',
    'envoy/config/endpoint/v3/endpoint.proto',
    'envoy/config/route/v3/route.proto',
    'envoy/config/listener/v3/listener.proto',
    'envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto',
    'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
    'envoy/extensions/filters/listener/original_dst/v3/original_dst.proto',
    'envoy/extensions/filters/http/router/v3/router.proto',
    'envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto',
    'envoy/extensions/transport_sockets/tls/v3/tls.proto',
]
TYPE = 'type.googleapis.com/'


def ip(s):
    return base64.b64encode(ipaddress.ip_address(s).packed).decode()


# ---- the cases -----------------------------------------------------------
# (name, full message name, JSON object, extra raw bytes appended or None)

def varint(n):
    out = b''
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def tag(num, wt):
    return varint(num << 3 | wt)


WORKLOAD = {
    'uid': 'Kubernetes//Pod/default/client-5b9c',
    'name': 'client-5b9c',
    'namespace': 'default',
    'addresses': [ip('198.18.0.10'), ip('fd00:198:18::a')],
    'hostname': 'client.example',
    'network': 'net1',
    'tunnelProtocol': 'HBONE',
    'trustDomain': 'example.org',
    'serviceAccount': 'client-sa',
    'waypoint': {'address': {'network': 'net1', 'address': ip('198.18.0.200')},
                 'hboneMtlsPort': 15008},
    'networkGateway': {'hostname': {'namespace': 'istio-system',
                                    'hostname': 'eastwest.istio-system.svc'},
                       'hboneMtlsPort': 15009},
    'node': 'node-a',
    'canonicalName': 'client',
    'canonicalRevision': 'v2',
    'workloadType': 'POD',
    'workloadName': 'client',
    'nativeTunnel': True,
    'applicationTunnel': {'protocol': 'PROXY', 'port': 15088},
    'services': {
        'default/server.default.svc.cluster.local': {
            'ports': [{'servicePort': 80, 'targetPort': 8080, 'appProtocol': 'HTTP11'},
                      {'servicePort': 443}]},
        'other/db.other.svc.cluster.local': {'ports': [{'servicePort': 5432, 'targetPort': 5433,
                                                        'appProtocol': 'TCP'}]},
    },
    'authorizationPolicies': ['default/allow-client', 'default/deny-x'],
    'status': 'UNHEALTHY',
    'clusterId': 'Kubernetes',
    'locality': {'region': 'eu-west', 'zone': 'eu-west-1a', 'subzone': 'rack7'},
    'networkMode': 'HOST_NETWORK',
    'extensions': [{'name': 'ext.a', 'config': {'@type': TYPE + 'google.protobuf.Duration',
                                                'value': '2.5s'}}],
    'capacity': 3,
}

SERVICE = {
    'name': 'server',
    'namespace': 'default',
    'hostname': 'server.default.svc.cluster.local',
    'addresses': [
        {'network': 'net1', 'address': ip('198.19.0.1')},
        {'address': ip('fd00:198:19::1')},
        # A range, and one whose prefix length is present and zero.
        {'network': 'net2', 'address': ip('198.19.8.0'), 'length': 24},
        {'address': ip('0.0.0.0'), 'length': 0},
    ],
    'ports': [{'servicePort': 80, 'targetPort': 8080, 'appProtocol': 'HTTP2'},
              {'servicePort': 9000, 'appProtocol': 'GRPC'}],
    'subjectAltNames': ['spiffe://example.org/ns/default/sa/server'],
    'waypoint': {'hostname': {'namespace': 'default', 'hostname': 'waypoint.default.svc'},
                 'hboneMtlsPort': 15008},
    'loadBalancing': {'routingPreference': ['NETWORK', 'REGION', 'ZONE', 'SUBZONE'],
                      'mode': 'FAILOVER', 'healthPolicy': 'ALLOW_ALL'},
    'ipFamilies': 'DUAL',
    'extensions': [{'name': 'ext.s'}],
    'canonical': True,
    'ingressUseWaypoint': True,
    'weightedWaypoints': [
        {'destination': {'address': {'address': ip('198.18.0.201')}, 'hboneMtlsPort': 15008},
         'weight': 30},
        {'destination': {'hostname': {'namespace': 'ns2', 'hostname': 'wp2.ns2.svc'}},
         'weight': 70},
    ],
    'visibility': 'NAMESPACE',
}

AUTHORIZATION = {
    'name': 'allow-client',
    'namespace': 'default',
    'scope': 'WORKLOAD_SELECTOR',
    'action': 'DENY',
    'groups': [
        {'rules': [
            {'matches': [
                {'namespaces': [{'exact': 'default'}, {'prefix': 'team-'}],
                 'notNamespaces': [{'suffix': '-test'}],
                 'serviceAccounts': [{'namespace': 'default', 'serviceAccount': 'client-sa'}],
                 'notServiceAccounts': [{'namespace': 'x', 'serviceAccount': 'y'}],
                 'principals': [{'exact': 'example.org/ns/default/sa/client-sa'}],
                 'notPrincipals': [{'presence': {}}],
                 'sourceIps': [{'address': ip('198.18.0.0'), 'length': 16}],
                 'notSourceIps': [{'address': ip('198.18.0.99'), 'length': 32}],
                 'destinationIps': [{'address': ip('fd00:198:18::'), 'length': 64}],
                 'notDestinationIps': [{'address': ip('198.18.0.98'), 'length': 32}],
                 'destinationPorts': [8080, 9090],
                 'notDestinationPorts': [15021],
                 'extensions': [{'name': 'm.ext'}]},
                {'principals': [{'prefix': 'example.org/ns/prod/'}]},
            ]},
            {'matches': [{'destinationPorts': [443]}]},
        ]},
        {'rules': []},
    ],
    'dryRun': True,
    'extensions': [{'name': 'a.ext'}],
}

PEER_AUTHN = {
    'selector': {'matchLabels': {'app': 'server', 'version': 'v1'}},
    'mtls': {'mode': 'STRICT'},
    'portLevelMtls': {'8080': {'mode': 'PERMISSIVE'}, '9090': {'mode': 'DISABLE'},
                      '15000': {}},
}

ISTIO_MATCH = {'envoy.transportSocketMatch': {'tlsMode': 'istio'}}

CLUSTER_EDS = {
    'name': 'outbound|80||server.default.svc.cluster.local',
    'altStatName': 'server_80',
    'type': 'EDS',
    'edsClusterConfig': {'edsConfig': {'ads': {}, 'initialFetchTimeout': '0s',
                                       'resourceApiVersion': 'V3'},
                         'serviceName': 'outbound|80||server.default.svc.cluster.local'},
    'connectTimeout': '1.500s',
    'perConnectionBufferLimitBytes': 32768,
    'lbPolicy': 'LEAST_REQUEST',
    'leastRequestLbConfig': {'choiceCount': 3},
    'circuitBreakers': {
        'thresholds': [{'maxConnections': 4294967295, 'maxPendingRequests': 1024,
                        'maxRequests': 2048, 'maxRetries': 3, 'trackRemaining': True},
                       {'priority': 'HIGH', 'maxConnections': 10, 'maxConnectionPools': 7,
                        'retryBudget': {'budgetPercent': {'value': 25.5},
                                        'minRetryConcurrency': 2}}],
        'perHostThresholds': [{'maxConnections': 100}],
    },
    'dnsRefreshRate': '5s',
    'dnsLookupFamily': 'V4_ONLY',
    'cleanupInterval': '60s',
    'transportSocketMatches': [
        {'name': 'tlsMode-istio', 'match': {'tlsMode': 'istio'},
         'transportSocket': {'name': 'envoy.transport_sockets.tls', 'typedConfig': {
             '@type': TYPE + 'envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
             'sni': 'outbound_.80_._.server.default.svc.cluster.local'}}},
        {'name': 'tlsMode-disabled', 'match': {},
         'transportSocket': {'name': 'envoy.transport_sockets.raw_buffer', 'typedConfig': {
             '@type': TYPE + 'envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer'}}},
    ],
    'metadata': {'filterMetadata': {'istio': {
        'services': [{'host': 'server.default.svc.cluster.local', 'name': 'server',
                      'namespace': 'default'}],
        'default_original_port': 80.0, 'alpn_override': False, 'nothing': None}}},
    'commonLbConfig': {'healthyPanicThreshold': {'value': 50.0},
                       'localityWeightedLbConfig': {}, 'updateMergeWindow': '0.250s',
                       'closeConnectionsOnHostSetChange': True},
    'upstreamConnectionOptions': {'tcpKeepalive': {'keepaliveProbes': 9, 'keepaliveTime': 300,
                                                   'keepaliveInterval': 75}},
    'closeConnectionsOnHostHealthFailure': True,
    'ignoreHealthOnHostRemoval': True,
    'typedExtensionProtocolOptions': {
        'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
            '@type': TYPE + 'google.protobuf.Struct', 'value': {'k': 'v'}}},
    'respectDnsTtl': True,
    'waitForWarmOnInit': False,
}

CLUSTER_STATIC = {
    'name': 'inbound|8080||',
    'type': 'STATIC',
    'connectTimeout': '10s',
    'lbPolicy': 'RING_HASH',
    'ringHashLbConfig': {'minimumRingSize': 1024, 'hashFunction': 'MURMUR_HASH_2',
                         'maximumRingSize': 8388608},
    'loadAssignment': {'clusterName': 'inbound|8080||', 'endpoints': [{'lbEndpoints': [
        {'endpoint': {'address': {'socketAddress': {'address': '127.0.0.6', 'portValue': 8080}}}}]}]},
    'transportSocket': {'name': 'envoy.transport_sockets.raw_buffer', 'typedConfig': {
        '@type': TYPE + 'envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer'}},
    'commonLbConfig': {'zoneAwareLbConfig': {'routingEnabled': {'value': 80.0},
                                             'minClusterSize': 6, 'failTrafficOnPanic': True}},
}

CLUSTER_ORIGDST = {
    'name': 'PassthroughCluster',
    'type': 'ORIGINAL_DST',
    'connectTimeout': '0.000001s',
    'lbPolicy': 'CLUSTER_PROVIDED',
    'originalDstLbConfig': {'useHttpHeader': True, 'httpHeaderName': 'x-dst',
                            'upstreamPortOverride': 0},
    'dnsLookupFamily': 'ALL',
}

CLUSTER_CUSTOM = {
    'name': 'maglev-custom',
    'clusterType': {'name': 'envoy.clusters.aggregate', 'typedConfig': {
        '@type': TYPE + 'google.protobuf.Empty'}},
    'lbPolicy': 'MAGLEV',
    'maglevLbConfig': {'tableSize': 65537},
    'connectTimeout': '-1.5s',
}

CLA = {
    'clusterName': 'outbound|80||server.default.svc.cluster.local',
    'endpoints': [
        {'locality': {'region': 'eu-west', 'zone': 'eu-west-1a', 'subZone': 'r1'},
         'lbEndpoints': [
             {'endpoint': {'address': {'socketAddress': {'address': '198.18.0.21',
                                                         'portValue': 8080}},
                           'healthCheckConfig': {'portValue': 8081, 'hostname': 'hc',
                                                 'disableActiveHealthCheck': True},
                           'hostname': 'server-1',
                           'additionalAddresses': [{'address': {'socketAddress': {
                               'address': 'fd00:198:18::15', 'portValue': 8080}}}]},
              'healthStatus': 'HEALTHY',
              'metadata': {'filterMetadata': {
                  'envoy.transportSocketMatch': {'tlsMode': 'istio'},
                  'istio': {'workload': 'server;default;server;v1;Kubernetes'}}},
              'loadBalancingWeight': 3},
             {'endpoint': {'address': {'socketAddress': {'address': '198.18.0.22',
                                                         'namedPort': 'http',
                                                         'protocol': 'UDP',
                                                         'resolverName': 'r',
                                                         'ipv4Compat': True}}},
              'healthStatus': 'DRAINING'},
             {'endpointName': 'named-1', 'healthStatus': 'DEGRADED'},
         ],
         'loadBalancingWeight': 10, 'priority': 0, 'proximity': 1,
         'metadata': {'filterMetadata': {'loc': {'a': 1.0}}}},
        {'locality': {'region': 'us-east'},
         'loadBalancerEndpoints': {'lbEndpoints': [
             {'endpoint': {'address': {'pipe': {'path': '/run/x.sock', 'mode': 384}}},
              'healthStatus': 'UNHEALTHY'},
             {'endpoint': {'address': {'envoyInternalAddress': {
                 'serverListenerName': 'connect_originate', 'endpointId': 'e1'}}},
              'healthStatus': 'TIMEOUT'}]},
         'priority': 1},
    ],
    'namedEndpoints': {'named-1': {'address': {'socketAddress': {'address': '198.18.0.23',
                                                                 'portValue': 9}}}},
    'policy': {'dropOverloads': [{'category': 'throttle', 'dropPercentage': {
        'numerator': 5, 'denominator': 'TEN_THOUSAND'}}],
        'overprovisioningFactor': 140, 'endpointStaleAfter': '30s',
        'weightedPriorityHealth': True},
}

HDR = {'header': {'key': 'x-added', 'value': 'yes'}, 'appendAction': 'OVERWRITE_IF_EXISTS_OR_ADD',
       'keepEmptyValue': True}
ROUTE = {
    'name': 'http.8080',
    'virtualHosts': [
        {'name': 'server.default.svc.cluster.local:80',
         'domains': ['server.default.svc.cluster.local', 'server', '198.19.0.1', '*.example'],
         'routes': [
             {'name': 'r-prefix', 'match': {'prefix': '/api/', 'caseSensitive': False,
                                            'headers': [
                                                {'name': 'x-env', 'stringMatch': {'exact': 'prod',
                                                                                  'ignoreCase': True}},
                                                {'name': 'x-any', 'presentMatch': True,
                                                 'invertMatch': True},
                                                {'name': 'x-range', 'rangeMatch': {'start': -5,
                                                                                   'end': 10}},
                                                {'name': 'x-re', 'safeRegexMatch': {'regex': 'a.*b'},
                                                 'treatMissingHeaderAsEmpty': True},
                                                {'name': 'x-old', 'exactMatch': 'e'},
                                                {'name': 'x-pre', 'prefixMatch': 'p'},
                                                {'name': 'x-suf', 'suffixMatch': 's'},
                                                {'name': 'x-con', 'containsMatch': 'c'},
                                                {'name': 'x-sm', 'stringMatch': {'safeRegex': {'regex': '^v[0-9]$'}}}],
                                            'grpc': {}},
              'route': {'cluster': 'outbound|80||server.default.svc.cluster.local',
                        'timeout': '0s', 'idleTimeout': '3600s', 'prefixRewrite': '/',
                        'hostRewriteLiteral': 'server.internal', 'priority': 'HIGH',
                        'clusterNotFoundResponseCode': 'NOT_FOUND',
                        'upgradeConfigs': [{'upgradeType': 'websocket'},
                                           {'upgradeType': 'CONNECT', 'enabled': False,
                                            'connectConfig': {'allowPost': True}}],
                        'maxStreamDuration': {'maxStreamDuration': '10s',
                                              'grpcTimeoutHeaderMax': '5s'},
                        'metadataMatch': {'filterMetadata': {'envoy.lb': {'version': 'v1'}}},
                        'appendXForwardedHost': True},
              'metadata': {'filterMetadata': {'istio': {'config': '/apis/x'}}},
              'requestHeadersToAdd': [HDR], 'requestHeadersToRemove': ['x-rm'],
              'responseHeadersToAdd': [HDR], 'responseHeadersToRemove': ['x-rs'],
              'typedPerFilterConfig': {'envoy.filters.http.fault': {
                  '@type': TYPE + 'google.protobuf.Struct', 'value': {'f': 1.0}}},
              'statPrefix': 'rp'},
             {'match': {'path': '/exact'},
              'route': {'weightedClusters': {
                  'clusters': [{'name': 'c1', 'weight': 90, 'requestHeadersToAdd': [HDR],
                                'hostRewriteLiteral': 'c1.host', 'typedPerFilterConfig': {
                                    'f': {'@type': TYPE + 'google.protobuf.Empty'}}},
                               {'name': 'c2', 'weight': 10, 'clusterHeader': 'x-c',
                                'metadataMatch': {'filterMetadata': {'m': {}}},
                                'requestHeadersToRemove': ['a'], 'responseHeadersToRemove': ['b'],
                                'responseHeadersToAdd': [HDR]}],
                  'totalWeight': 100, 'runtimeKeyPrefix': 'rk', 'headerName': 'x-w'}}},
             {'match': {'safeRegex': {'regex': '^/re/[0-9]+$'}},
              'route': {'clusterHeader': 'x-cluster', 'autoHostRewrite': True}},
             {'match': {'connectMatcher': {}}, 'route': {'cluster': 'tunnel',
                                                         'hostRewriteHeader': 'x-host'}},
             {'match': {'pathSeparatedPrefix': '/sep'},
              'redirect': {'httpsRedirect': True, 'hostRedirect': 'h', 'portRedirect': 8443,
                           'pathRedirect': '/new', 'responseCode': 'PERMANENT_REDIRECT',
                           'stripQuery': True}},
             {'match': {'prefix': '/r2'},
              'redirect': {'schemeRedirect': 'http', 'prefixRewrite': '/p2'}},
             {'match': {'prefix': '/dr'},
              'directResponse': {'status': 503, 'body': {'inlineString': 'no healthy upstream'}}},
             {'match': {'prefix': '/dr2'},
              'directResponse': {'status': 200, 'body': {'inlineBytes': base64.b64encode(
                  b'\x00\x01bin').decode()}}},
             {'match': {'prefix': '/nf'}, 'nonForwardingAction': {}},
         ],
         'requireTls': 'EXTERNAL_ONLY',
         'requestHeadersToAdd': [HDR], 'requestHeadersToRemove': ['q'],
         'responseHeadersToAdd': [HDR], 'responseHeadersToRemove': ['r'],
         'typedPerFilterConfig': {'vh.f': {'@type': TYPE + 'google.protobuf.Empty'}},
         'metadata': {'filterMetadata': {'vh': {'n': 1.0}}}},
        {'name': 'allow_any', 'domains': ['*'],
         'routes': [{'match': {'prefix': '/'}, 'route': {'cluster': 'PassthroughCluster'}}]},
    ],
    'internalOnlyHeaders': ['x-internal'],
    'responseHeadersToAdd': [HDR], 'responseHeadersToRemove': ['server'],
    'requestHeadersToAdd': [{'header': {'key': 'x-raw', 'rawValue': base64.b64encode(
        b'\xffraw').decode()}, 'append': False}],
    'requestHeadersToRemove': ['x-b'],
    'validateClusters': False,
    'mostSpecificHeaderMutationsWins': True,
    'maxDirectResponseBodySizeBytes': 4096,
    'ignorePortInHostMatching': True,
    'typedPerFilterConfig': {'rc.f': {'@type': TYPE + 'google.protobuf.Empty'}},
    'metadata': {'filterMetadata': {'rc': {'s': 'x'}}},
}

TCP_PROXY = {
    '@type': TYPE + 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
    'statPrefix': 'outbound|80||server', 'cluster': 'outbound|80||server.default.svc.cluster.local',
    'idleTimeout': '3600s', 'downstreamIdleTimeout': '10s', 'upstreamIdleTimeout': '20s',
    'maxConnectAttempts': 3, 'maxDownstreamConnectionDuration': '86400s',
    'metadataMatch': {'filterMetadata': {'envoy.lb': {'k': 'v'}}},
}
HCM = {
    '@type': TYPE + 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    'codecType': 'HTTP2', 'statPrefix': 'inbound_0.0.0.0_8080',
    'rds': {'configSource': {'ads': {}, 'resourceApiVersion': 'V3'}, 'routeConfigName': '8080'},
    'httpFilters': [{'name': 'envoy.filters.http.router', 'typedConfig': {
        '@type': TYPE + 'envoy.extensions.filters.http.router.v3.Router'}, 'isOptional': True,
        'disabled': True}],
    'drainTimeout': '5s', 'useRemoteAddress': False, 'xffNumTrustedHops': 2,
    'streamIdleTimeout': '0s', 'requestTimeout': '30s',
}
HCM_INLINE = {
    '@type': HCM['@type'], 'statPrefix': 'inline',
    'routeConfig': {'name': 'inline-rc', 'virtualHosts': [{'name': 'v', 'domains': ['*']}]},
}
LISTENER = {
    'name': 'virtualOutbound',
    'address': {'socketAddress': {'address': '0.0.0.0', 'portValue': 15001}},
    'additionalAddresses': [{'address': {'socketAddress': {'address': '::', 'portValue': 15001}}}],
    'statPrefix': 'vo',
    'filterChains': [
        {'name': 'tcp-80',
         'filterChainMatch': {'destinationPort': 80,
                              'prefixRanges': [{'addressPrefix': '198.19.0.1', 'prefixLen': 32},
                                               {'addressPrefix': 'fd00::'}],
                              'addressSuffix': 'x', 'suffixLen': 0,
                              'directSourcePrefixRanges': [{'addressPrefix': '10.0.0.0',
                                                            'prefixLen': 8}],
                              'sourceType': 'SAME_IP_OR_LOOPBACK',
                              'sourcePrefixRanges': [{'addressPrefix': '198.18.0.0',
                                                      'prefixLen': 16}],
                              'sourcePorts': [1234, 5678],
                              'serverNames': ['server.example', '*.example'],
                              'transportProtocol': 'tls',
                              'applicationProtocols': ['istio-peer-exchange', 'istio', 'h2']},
         'filters': [{'name': 'envoy.filters.network.tcp_proxy', 'typedConfig': TCP_PROXY}],
         'useProxyProto': False,
         'metadata': {'filterMetadata': {'fc': {'x': True}}},
         'transportSocket': {'name': 'envoy.transport_sockets.tls', 'typedConfig': {
             '@type': TYPE + 'envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'}},
         'transportSocketConnectTimeout': '10s'},
        {'filterChainMatch': {'transportProtocol': 'raw_buffer', 'sourceType': 'EXTERNAL'},
         'filters': [{'name': 'envoy.filters.network.http_connection_manager',
                      'typedConfig': HCM}]},
        {'filters': [{'name': 'hcm2', 'typedConfig': HCM_INLINE},
                     {'name': 'tcp2', 'typedConfig': {
                         '@type': TCP_PROXY['@type'], 'weightedClusters': {'clusters': [
                             {'name': 'a', 'weight': 1},
                             {'name': 'b', 'weight': 2,
                              'metadataMatch': {'filterMetadata': {'envoy.lb': {}}}}]}}}]},
    ],
    'useOriginalDst': True,
    'defaultFilterChain': {'name': 'PassthroughFilterChain', 'filters': [
        {'name': 'envoy.filters.network.tcp_proxy', 'typedConfig': {
            '@type': TCP_PROXY['@type'], 'statPrefix': 'PassthroughCluster',
            'cluster': 'PassthroughCluster'}}]},
    'perConnectionBufferLimitBytes': 0,
    'metadata': {'filterMetadata': {'l': {}}},
    'drainType': 'MODIFY_ONLY',
    'listenerFilters': [
        {'name': 'envoy.filters.listener.original_dst', 'typedConfig': {
            '@type': TYPE + 'envoy.extensions.filters.listener.original_dst.v3.OriginalDst'}},
        {'name': 'no-config'}],
    'listenerFiltersTimeout': '0.1s',
    'continueOnListenerFiltersTimeout': True,
    'transparent': False,
    'freebind': True,
    'trafficDirection': 'OUTBOUND',
    'bindToPort': False,
}

# Unknown to us: numbers upstream has that our subset leaves out (Cluster:
# health_checks 8, outlier_detection 19, lb_subset_config 22, filters 40;
# SocketAddress none), on top of a field we know.
CLUSTER_SKIP = {
    'name': 'skip-me-not',
    'type': 'STRICT_DNS',
    'healthChecks': [{'timeout': '1s', 'interval': '2s', 'tcpHealthCheck': {}}],
    'outlierDetection': {'consecutive5xx': 5, 'interval': '10s'},
    'lbSubsetConfig': {'subsetSelectors': [{'keys': ['version']}]},
    'filters': [{'name': 'f'}],
    'connectTimeout': '2s',
    'lrsServer': {'self': {}},
    'lbPolicy': 'RANDOM',
}

# Numbers no schema has (yet): appended raw to a real encoding. Each wire
# type once: varint 99, 64-bit 100, length-delimited 101 (which looks like a
# nested message), 32-bit 102, and a huge number near the top of the range.
NESTED = tag(1, 2) + varint(2) + b'hi'
FUTURE = (tag(99, 0) + varint(1 << 63) + tag(100, 1) + bytes(range(8)) +
          tag(101, 2) + varint(len(NESTED)) + NESTED + tag(102, 5) + b'\x01\x02\x03\x04' +
          tag(536870911, 0) + varint(1))

CASES = [
    ('workload', 'istio.workload.Address', {'workload': WORKLOAD}, None),
    ('service', 'istio.workload.Address', {'service': SERVICE}, None),
    ('authorization', 'istio.security.Authorization', AUTHORIZATION, None),
    ('peer-authentication', 'istio.security.v1beta1.PeerAuthentication', PEER_AUTHN, None),
    ('cluster-eds', 'envoy.config.cluster.v3.Cluster', CLUSTER_EDS, None),
    ('cluster-static', 'envoy.config.cluster.v3.Cluster', CLUSTER_STATIC, None),
    ('cluster-origdst', 'envoy.config.cluster.v3.Cluster', CLUSTER_ORIGDST, None),
    ('cluster-custom', 'envoy.config.cluster.v3.Cluster', CLUSTER_CUSTOM, None),
    ('cla', 'envoy.config.endpoint.v3.ClusterLoadAssignment', CLA, None),
    ('route', 'envoy.config.route.v3.RouteConfiguration', ROUTE, None),
    ('listener', 'envoy.config.listener.v3.Listener', LISTENER, None),
    # Unknown fields.
    ('cluster-unknown-fields', 'envoy.config.cluster.v3.Cluster', CLUSTER_SKIP, None),
    ('workload-future-fields', 'istio.workload.Address',
     {'workload': {'uid': 'u1', 'name': 'w', 'addresses': [ip('198.18.0.30')]}}, FUTURE),
]

# Unknown enum values: the real library keeps open enums as numbers; we
# build these by setting the numbers on the real message (JSON has no
# portable way to write them), and write the JSON json_format emits.
ENUM_CASES = [
    ('workload-unknown-tunnel', 'istio.workload.Address',
     {'workload': {'uid': 'u2', 'name': 'w2', 'tunnelProtocol': 'HBONE'}},
     [('workload.tunnel_protocol', 7)]),
    ('service-unknown-lb', 'istio.workload.Address',
     {'service': {'name': 's', 'namespace': 'n', 'hostname': 's.n',
                  'loadBalancing': {'routingPreference': ['ZONE'], 'mode': 'STRICT'}}},
     [('service.load_balancing.mode', 9), ('service.load_balancing.routing_preference', [2, 42])]),
    # Fields ztunnel reads leniently (an unknown value is not refused).
    ('workload-lenient-enums', 'istio.workload.Address',
     {'workload': {'uid': 'u3', 'name': 'w3', 'workloadType': 'POD', 'status': 'HEALTHY'}},
     [('workload.workload_type', 9)]),
    ('service-lenient-enums', 'istio.workload.Address',
     {'service': {'name': 's', 'namespace': 'n', 'hostname': 's.n',
                  'ports': [{'servicePort': 80, 'appProtocol': 'HTTP2'}]}},
     [('service.visibility', 5), ('service.ports.0.app_protocol', 12)]),
    ('cla-unknown-health', 'envoy.config.endpoint.v3.ClusterLoadAssignment',
     {'clusterName': 'c', 'endpoints': [{'lbEndpoints': [{'endpointName': 'e'}]}]},
     [('endpoints.0.lb_endpoints.0.health_status', 17)]),
]


# ---- building -----------------------------------------------------------

def protoc(includes, files, out):
    cmd = ['protoc', '--include_imports', '-o', out] + [f'-I{i}' for i in includes] + files
    subprocess.run(cmd, check=True)


def load_pool(paths):
    pool = descriptor_pool.DescriptorPool()
    seen = set()
    for path in paths:
        s = descriptor_pb2.FileDescriptorSet()
        with open(path, 'rb') as f:
            s.ParseFromString(f.read())
        for fd in s.file:
            if fd.name not in seen:
                seen.add(fd.name)
                pool.Add(fd)
    return pool


def msg_class(pool, name):
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName(name))


def set_path(msg, path, value):
    parts = path.split('.')
    for p in parts[:-1]:
        msg = msg[int(p)] if p.isdigit() else getattr(msg, p)
    last = parts[-1]
    if isinstance(value, list):
        field = getattr(msg, last)
        del field[:]
        field.extend(value)
    else:
        setattr(msg, last, value)


def write(out, name, text, data, pool, typ):
    with open(os.path.join(out, name + '.json'), 'w') as f:
        f.write(text)
    with open(os.path.join(out, name + '.bin'), 'wb') as f:
        f.write(data)
    # The encoder's golden: the message as a reader of the bytes has it.
    back = msg_class(pool, typ)()
    back.ParseFromString(data)
    with open(os.path.join(out, name + '.out.json'), 'w', encoding='utf-8') as f:
        f.write(json.dumps(json_format.MessageToDict(back, descriptor_pool=pool), indent=1,
                           sort_keys=True, ensure_ascii=False) + '\n')
    print(f'{name}: {len(data)} bytes')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--istio-pkg', required=True)
    ap.add_argument('--istio-api', required=True)
    ap.add_argument('--envoy-deps', required=True)
    ap.add_argument('--out', default=HERE)
    ap.add_argument('--check-ours')
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='or-goldens-')
    try:
        d = a.envoy_deps
        pgv = pgv_copy(os.path.join(d, 'protoc-gen-validate'), tmp)
        envoy_pb, istio_pb = os.path.join(tmp, 'envoy.pb'), os.path.join(tmp, 'istio.pb')
        protoc([os.path.join(d, 'envoy-api'), os.path.join(d, 'xds'), os.path.join(d, 'googleapis'),
                pgv, WKT_INCLUDE], ENVOY_FILES, envoy_pb)
        # Istio's authorization.proto imports "workloadapi/workload.proto",
        # its pkg/ directory is the include root.
        protoc([a.istio_pkg, a.istio_api, os.path.join(d, 'googleapis'), WKT_INCLUDE],
               ISTIO_FILES + ISTIO_API_FILES, istio_pb)
        if a.check_ours:
            ours_pb = os.path.join(tmp, 'ours.pb')
            files = sorted(os.path.relpath(os.path.join(r, n), a.check_ours)
                           for r, _, ns in os.walk(a.check_ours) for n in ns if n.endswith('.proto'))
            protoc([a.check_ours], files, ours_pb)
            rc = subprocess.run([sys.executable, os.path.join(HERE, 'check-schema.py'), ours_pb,
                                 envoy_pb, istio_pb]).returncode
            if rc:
                sys.exit('check-schema.py found problems')
        pool = load_pool([envoy_pb, istio_pb])
        for name, typ, obj, extra in CASES:
            text = json.dumps(obj, indent=1, sort_keys=True) + '\n'
            m = msg_class(pool, typ)()
            json_format.Parse(text, m, descriptor_pool=pool)
            data = m.SerializeToString(deterministic=True) + (extra or b'')
            # The real library must read back what it wrote, extra bytes and all.
            back = msg_class(pool, typ)()
            back.ParseFromString(data)
            if extra and back.SerializeToString(deterministic=True) == m.SerializeToString(deterministic=True):
                sys.exit(f'{name}: the appended fields were not kept as unknown')
            write(a.out, name, text, data, pool, typ)
        for name, typ, obj, sets in ENUM_CASES:
            m = msg_class(pool, typ)()
            json_format.Parse(json.dumps(obj), m, descriptor_pool=pool)
            for path, value in sets:
                set_path(m, path, value)
            text = json_format.MessageToJson(m, descriptor_pool=pool, sort_keys=True, indent=1) + '\n'
            write(a.out, name, text, m.SerializeToString(deterministic=True), pool, typ)
    finally:
        shutil.rmtree(tmp)


if __name__ == '__main__':
    main()
