"""Test certificates made with the openssl CLI (an implementation independent
of ours): a mesh root, intermediates, and workload leaves carrying a SPIFFE
URI SAN, in Istio's file-mounted layout (cert-chain.pem, key.pem,
root-cert.pem). Python 3.11 stdlib + /usr/bin/openssl only.

    import certs
    ca = certs.CA("/tmp/x/ca", trust_domain="cluster.local")
    ca.issue("/tmp/x/client", "spiffe://cluster.local/ns/default/sa/client")
    ca.issue(d, spiffe, days=-1)          # already expired
    ca.issue(d, spiffe, not_before="+1d") # not yet valid
    other = certs.CA("/tmp/x/other")      # another root: untrusted by ca's leaves
"""
import os
import subprocess

OPENSSL = "/usr/bin/openssl"


def _run(argv, **kw):
    r = subprocess.run([OPENSSL] + argv, capture_output=True, text=True, timeout=30, **kw)
    if r.returncode != 0:
        raise RuntimeError("openssl %s -> %d: %s" % (" ".join(argv), r.returncode, r.stderr[-2000:]))
    return r.stdout


def _ec_key(path):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])
    os.chmod(path, 0o644)   # the proxy runs as 1337 and reads it


def spiffe_id(ns, sa, trust_domain="cluster.local"):
    return "spiffe://%s/ns/%s/sa/%s" % (trust_domain, ns, sa)


class CA:
    """A root (self-signed, EC P-256) in dir: root-cert.pem, root-key.pem."""

    def __init__(self, dir, trust_domain="cluster.local", days=30, name="test mesh root"):
        self.dir, self.trust_domain = dir, trust_domain
        os.makedirs(dir, exist_ok=True)
        self.cert = os.path.join(dir, "root-cert.pem")
        self.key = os.path.join(dir, "root-key.pem")
        if not os.path.exists(self.cert):
            _ec_key(self.key)
            _run(["req", "-x509", "-new", "-key", self.key, "-out", self.cert, "-days", str(days),
                  "-subj", "/O=%s/CN=%s" % (trust_domain, name),
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                  "-addext", "subjectAltName=URI:spiffe://%s" % trust_domain])

    def root_pem(self):
        with open(self.cert) as f:
            return f.read()

    def issue(self, out_dir, spiffe, days=1, not_before=None, extra_sans=(), key=None,
              with_root_in_chain=False):
        """Write out_dir/{cert-chain.pem,key.pem,root-cert.pem} for a leaf with URI SAN
        spiffe (None: no SAN). days < 0 makes it expired; not_before "+1d" makes it not yet
        valid (openssl ca's -startdate form YYYYMMDDHHMMSSZ is computed here). key: use
        this existing key file instead of a new one (e.g. a mismatching key)."""
        import datetime
        os.makedirs(out_dir, exist_ok=True)
        key_path = os.path.join(out_dir, "key.pem")
        if key:
            with open(key) as f, open(key_path, "w") as g:
                g.write(f.read())
            os.chmod(key_path, 0o644)
            own_key = os.path.join(out_dir, ".leaf-key.pem")
            _ec_key(own_key)
        else:
            _ec_key(key_path)
            own_key = key_path
        csr = os.path.join(out_dir, ".leaf.csr")
        _run(["req", "-new", "-key", own_key, "-out", csr, "-subj", "/"])
        ext = os.path.join(out_dir, ".leaf.ext")
        sans = (["URI:" + spiffe] if spiffe else []) + list(extra_sans)
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
            if sans:
                f.write("subjectAltName=critical,%s\n" % ",".join(sans))
        now = datetime.datetime.now(datetime.timezone.utc)
        start = now - datetime.timedelta(minutes=5)
        if not_before:
            start = now + datetime.timedelta(days=int(not_before.strip("+d")))
        end = now + datetime.timedelta(days=days) if days > 0 else now + datetime.timedelta(days=days, minutes=-10)
        if not_before:
            end = start + datetime.timedelta(days=max(days, 1))
        if end <= start:
            start = end - datetime.timedelta(days=1)
        fmt = "%Y%m%d%H%M%SZ"
        leaf = os.path.join(out_dir, "cert-chain.pem")
        self._sign(csr, ext, leaf, start.strftime(fmt), end.strftime(fmt))
        if with_root_in_chain:
            with open(leaf, "a") as f:
                f.write(self.root_pem())
        with open(os.path.join(out_dir, "root-cert.pem"), "w") as f:
            f.write(self.root_pem())
        for p in (csr, ext):
            os.unlink(p)
        for n in ("cert-chain.pem", "root-cert.pem"):
            os.chmod(os.path.join(out_dir, n), 0o644)
        return out_dir


    def _sign(self, csr, ext, out, start, end):
        """openssl ca (openssl x509 -req cannot set a start date before 3.4)."""
        db = os.path.join(self.dir, "db")
        os.makedirs(db, exist_ok=True)
        cnf = os.path.join(db, "ca.cnf")
        open(os.path.join(db, "index.txt"), "a").close()
        if not os.path.exists(os.path.join(db, "serial")):
            with open(os.path.join(db, "serial"), "w") as f:
                f.write("1000\n")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nnew_certs_dir=%s\n"
                    "default_md=sha256\npolicy=p\nunique_subject=no\ncopy_extensions=none\n"
                    "serial=%s/serial\n[p]\n" % (db, db, db))
        _run(["ca", "-batch", "-notext", "-config", cnf, "-cert", self.cert, "-keyfile", self.key,
              "-in", csr, "-out", out, "-extfile", ext, "-startdate", start, "-enddate", end,
              "-subj", "/O=%s" % self.trust_domain])
