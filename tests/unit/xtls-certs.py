"""Certificates for test_xtls (made by the openssl CLI through tests/lab/certs.py,
an implementation independent of ours). Usage: xtls-certs.py CERTS_PY_DIR OUT_DIR"""
import sys

sys.path.insert(0, sys.argv[1])
import certs  # noqa: E402

out = sys.argv[2]
ca = certs.CA(out + "/ca", trust_domain="cluster.local")
other = certs.CA(out + "/other", trust_domain="cluster.local", name="another mesh root")
sid = lambda sa, td="cluster.local": certs.spiffe_id("default", sa, td)
ca.issue(out + "/server", sid("server"))
ca.issue(out + "/server2", sid("server2"))
ca.issue(out + "/client", sid("client"))
ca.issue(out + "/client-td", sid("client", "evil.example"))
ca.issue(out + "/client-expired", sid("client"), days=-1)
ca.issue(out + "/client-future", sid("client"), not_before="+1d")
ca.issue(out + "/client-nosan", None)
other.issue(out + "/client-other", sid("client"))
