"""Static mesh resources for a sidecar's -c FILE, in the form xDS delivers them (each an Any in
proto3 JSON: istio.workload.Address holding a Workload or a Service). Used by the e2e tests,
the demo and the bench; see outrigger.json(5)."""
import base64
import ipaddress

ADDRESS = "type.googleapis.com/istio.workload.Address"


def _b64(ip):
    return base64.b64encode(ipaddress.ip_address(ip).packed).decode()


def workload(uid, name, ips, services=None, namespace="default", **extra):
    """A Workload at ips (list of str); services: {"ns/hostname": [(service_port, target_port)]}.
    extra: other Workload fields in proto3 JSON (locality, capacity, status, ...)."""
    wl = {"uid": uid, "name": name, "namespace": namespace,
          "addresses": [_b64(ip) for ip in ips]}
    if services:
        wl["services"] = {k: {"ports": [{"servicePort": sp, "targetPort": tp} for sp, tp in v]}
                          for k, v in services.items()}
    wl.update(extra)
    return {"@type": ADDRESS, "workload": wl}


def service(name, vips, ports, namespace="default", **extra):
    """A Service with VIPs (list of str) and ports [(service_port, target_port)]; its key is
    "<namespace>/<name>.<namespace>.svc.cluster.local"."""
    svc = {"name": name, "namespace": namespace,
           "hostname": "%s.%s.svc.cluster.local" % (name, namespace),
           "addresses": [{"network": "", "address": _b64(v)} for v in vips],
           "ports": [{"servicePort": sp, "targetPort": tp} for sp, tp in ports]}
    svc.update(extra)
    return {"@type": ADDRESS, "service": svc}


def key(name, namespace="default"):
    return "%s/%s.%s.svc.cluster.local" % (namespace, name, namespace)


def config(resources, registry_only=False, proxy=None):
    """A whole -c FILE: proxy settings, mesh (outboundTrafficPolicy) and the resources."""
    cfg = {"resources": list(resources)}
    if registry_only:
        cfg["mesh"] = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    if proxy:
        cfg["proxy"] = dict(proxy)
    return cfg
