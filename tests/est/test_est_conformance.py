"""EST conformance (RFC 7030 / RFC 8951, issue 4) of the EST server core:
common/est.c over common/http.c, run by tests/est/est_harness with its
in-process test backend, and judged by curl, the openssl CLI and
est_pop_client (proof of possession by TLS channel binding).

The harness listens on 127.0.0.41 (the incomplete-chain one on 127.0.0.42),
on a free port, with a 2-second timeout so the slowloris checks stay short.
"""

import base64
import http.client
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import BUILD, openssl, run  # noqa: E402

HARNESS = str(BUILD / "tests/est/est_harness")
POP = str(BUILD / "tests/est/est_pop_client")
ADDR = "127.0.0.41"
ADDR_INCOMPLETE = "127.0.0.42"
TIMEOUT = 2  # the harness' idle timeout and request deadline, seconds
UNIT_DATA = Path(__file__).resolve().parents[1] / "unit/data"
PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
# Fewer TLS handshakes under the sanitizers, where each costs 10x.
BAD_COUNT = int(os.environ.get("ISELAB_EST_BAD_COUNT", "1000"))


def free_port(addr):
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp, addr, *extra):
        self.dir = tmp
        self.addr = addr
        self.port = free_port(addr)
        self.log = open(tmp / "harness.log", "w+")
        self.proc = subprocess.Popen(
            [HARNESS, "--dir", str(tmp), "--listen", addr, "--port", str(self.port),
             "--timeout", str(TIMEOUT), "--workers", "2", *extra],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        assert line.startswith("ready"), f"harness did not start: {self.logtext()}"
        self.url = f"https://{addr}:{self.port}/.well-known/est"

    def logtext(self):
        self.log.flush()
        return (self.dir / "harness.log").read_text()

    def stop(self):
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        # A clean stop, and no sanitizer report.
        assert rc == 0, self.logtext()[-4000:]

    def f(self, name):
        return str(self.dir / name)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("est"), ADDR)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


def curl(srv, path, *args, method=None, data=None, ctype="application/pkcs10",
         user=None, cert=None, headers=()):
    """Returns (status, headers dict lower-cased, body bytes)."""
    cmd = ["curl", "-sS", "--max-time", "30", "--cacert", srv.f("root.pem"),
           "-D", "-", "-o", "-"]
    if method:
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", "@-"]
        if ctype:
            cmd += ["-H", "Content-Type: " + ctype]
    if user:
        cmd += ["-u", user]
    if cert:
        cmd += ["--cert", srv.f(cert + ".pem"), "--key", srv.f(cert + ".key")]
    for h in headers:
        cmd += ["-H", h]
    cmd += [*args, f"{srv.url}/{path}"]
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def make_csr(work, name, key="ec:P-256", subj="/CN=dev1", extra=()):
    """A CSR made by `openssl req`; returns its DER."""
    kfile, der = work / (name + ".key"), work / (name + ".der")
    if key.startswith("ec:"):
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + key[3:]]
    else:
        newkey = ["-newkey", key]
    openssl("req", "-new", *newkey, "-nodes", "-keyout", str(kfile), "-subj", subj,
            *extra, "-outform", "DER", "-out", str(der))
    return der.read_bytes()


def b64(der, lines=True):
    s = base64.b64encode(der)
    if lines:
        s = b"\n".join(s[i:i + 64] for i in range(0, len(s), 64)) + b"\n"
    return s


def pkcs7_certs(work, body, name):
    """The certificates of a base64 certs-only answer, as PEM file."""
    der = base64.b64decode(re.sub(rb"\s", b"", body))
    src, out = work / (name + ".p7"), work / (name + ".pem")
    src.write_bytes(der)
    p = openssl("pkcs7", "-inform", "DER", "-in", str(src), "-print_certs", "-out", str(out))
    assert p.returncode == 0
    return out, out.read_text().count("BEGIN CERTIFICATE")


def check_issued(srv, work, body, name, subject="CN=dev1"):
    assert body.count(b"\r\n") >= 2, "base64 with line breaks (RFC 7030 4.1.3)"
    pem, n = pkcs7_certs(work, body, name)
    assert n == 1, "only the issued certificate (RFC 7030 4.2.3)"
    p = openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", srv.f("root.pem"),
                "-untrusted", srv.f("chain.pem"), str(pem), check=None)
    assert p.returncode == 0, p.stdout + p.stderr
    s = openssl("x509", "-in", str(pem), "-noout", "-subject", "-nameopt", "RFC2253").stdout
    assert s.strip() == "subject=" + subject
    return pem


# cacerts (RFC 7030 4.1)

def test_cacerts(srv, work):
    st, h, body = curl(srv, "cacerts")
    assert st == 200
    assert h["content-type"] == PKCS7
    assert h["content-transfer-encoding"] == "base64"
    pem, n = pkcs7_certs(work, body, "cacerts")
    assert n == 3
    subjects = re.findall(r"subject=(.*)", pem.read_text())
    assert subjects == ["CN = Certificate Services Endpoint Sub CA - psn1",
                        "CN = Certificate Services Node CA - pan1",
                        "CN = Certificate Services Root CA - pan1"]
    # A certs-only response: no signer, no content (RFC 5272 4.1).
    der = work / "cacerts.p7"
    txt = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(der)).stdout
    assert re.search(r"signerInfos:\s*<EMPTY>", txt)
    assert re.search(r"eContent:\s*<ABSENT>", txt), txt


def test_cacerts_label_and_paths(srv):
    assert curl(srv, "default/cacerts")[0] == 200
    assert curl(srv, "strict/cacerts")[0] == 200
    st, h, body = curl(srv, "nosuchlabel/cacerts")
    assert st == 404 and b"unknown label" in body
    assert h["content-type"].startswith("text/plain")
    assert curl(srv, "cacertz")[0] == 404
    assert curl(srv, "a/b/cacerts")[0] == 404
    assert curl(srv, "..%2fx/cacerts")[0] == 404


def test_wrong_method(srv):
    st, h, body = curl(srv, "cacerts", method="POST", data=b"x")
    assert st == 405 and h["allow"] == "GET"
    st, h, body = curl(srv, "simpleenroll")
    assert st == 405 and h["allow"] == "POST"


# simpleenroll (RFC 7030 4.2)

@pytest.mark.parametrize("key", ["ec:P-256", "ec:P-384", "rsa:2048", "rsa:4096"])
def test_enroll_basic_keys(srv, work, key):
    der = make_csr(work, "k" + key.replace(":", ""), key=key)
    st, h, body = curl(srv, "simpleenroll", data=b64(der), user="estuser:estpass")
    assert st == 200, body
    assert h["content-type"] == PKCS7
    check_issued(srv, work, body, "k" + key.replace(":", ""))


@pytest.mark.parametrize("lines,cte", [(True, True), (True, False), (False, True), (False, False)])
def test_enroll_encodings(srv, work, lines, cte):
    """RFC 8951 3.2: base64 with or without line breaks, with or without
    Content-Transfer-Encoding."""
    der = make_csr(work, "enc")
    hdrs = ["Content-Transfer-Encoding: base64"] if cte else []
    st, _, body = curl(srv, "simpleenroll", data=b64(der, lines), user="estuser:estpass",
                       headers=hdrs)
    assert st == 200, body


def test_enroll_client_cert(srv, work):
    der = make_csr(work, "cc", subj="/CN=by-cert")
    st, _, body = curl(srv, "simpleenroll", data=b64(der), cert="client")
    assert st == 200, body
    pem = check_issued(srv, work, body, "cc", subject="CN=by-cert")
    zl = shutil.which("zlint") or ("/root/go/bin/zlint" if os.path.exists("/root/go/bin/zlint") else None)
    if zl:
        rep = run([zl, "-includeSources", "RFC5280,RFC3279,RFC5480", str(pem)]).stdout
        assert '"result"' in rep, rep
        bad = re.findall(r'"([a-z0-9_]+)":\{"result":"(error|fatal)"', rep)
        assert not bad, bad


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_enroll_tls_versions(srv, work, tls):
    der = make_csr(work, "tls" + tls)
    args = ["--tls-max", "1.2"] if tls == "1.2" else ["--tlsv1.3"]
    st, _, body = curl(srv, "simpleenroll", *args, data=b64(der), user="estuser:estpass")
    assert st == 200, body
    p = openssl("s_client", "-connect", f"{srv.addr}:{srv.port}", "-tls1_" + tls[-1],
                "-CAfile", srv.f("root.pem"), "-verify_return_error", input="", check=None)
    assert f"Protocol  : TLSv{tls}" in p.stdout or f"New, TLSv{tls}" in p.stdout, p.stdout


@pytest.mark.parametrize("proto", ["-tls1", "-tls1_1"])
def test_old_tls_refused(srv, proto):
    p = openssl("s_client", "-connect", f"{srv.addr}:{srv.port}", proto,
                "-cipher", "DEFAULT@SECLEVEL=0", input="", check=None)
    assert p.returncode != 0
    assert "alert protocol version" in p.stdout + p.stderr


def test_unauthenticated_401(srv, work):
    der = make_csr(work, "unauth")
    st, h, body = curl(srv, "simpleenroll", data=b64(der))
    assert st == 401
    assert h["www-authenticate"] == 'Basic realm="ISE EST"'
    assert b"authentication required" in body


@pytest.mark.parametrize("user,cert,reason", [
    ("estuser:wrong", None, b"wrong user name or password"),
    ("nobody:estpass", None, b"wrong user name or password"),
    (None, "client-foreign", b"client certificate"),
    (None, "client-expired", b"expired"),
    (None, "client-revoked", b"revoked"),
])
def test_bad_credentials_401(srv, work, user, cert, reason):
    der = make_csr(work, "badcred")
    st, h, body = curl(srv, "simpleenroll", data=b64(der), user=user, cert=cert)
    assert st == 401, body
    assert "www-authenticate" in h
    assert reason in body


def test_bad_cert_but_good_basic(srv, work):
    der = make_csr(work, "fallback")
    st, _, body = curl(srv, "simpleenroll", data=b64(der), user="estuser:estpass",
                       cert="client-revoked")
    assert st == 200, body


def test_wrong_content_type_415(srv, work):
    der = make_csr(work, "ct")
    st, _, body = curl(srv, "simpleenroll", data=b64(der), ctype="text/plain",
                       user="estuser:estpass")
    assert st == 415 and b"application/pkcs10" in body
    st, _, _ = curl(srv, "simpleenroll", data=b64(der), ctype="application/pkcs10; x=y",
                    user="estuser:estpass")
    assert st == 200


def test_body_too_large_413(srv):
    st, h, body = curl(srv, "simpleenroll", data=b"A" * (64 * 1024 + 1), user="estuser:estpass")
    assert st == 413
    # libevent's own refusal, made plain text like every other (http.c).
    assert h["content-type"].startswith("text/plain"), h
    assert h["connection"] == "close"
    assert body == b"request body too large: at most 65536 bytes\n", body


def test_unparsable_request_400_plain(srv):
    s = tls_ctx(srv).wrap_socket(socket.create_connection((srv.addr, srv.port), timeout=10),
                                 server_hostname=srv.addr)
    s.sendall(b"GARBAGE\r\n\r\n")
    data = recv_all(s, time.monotonic() + 10)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), data
    assert b"Content-Type: text/plain" in head, data
    assert b"<HTML" not in data.upper(), data
    assert body.startswith(b"bad request:"), data


def csr_p521(work):
    return make_csr(work, "p521", key="ec:P-521")


@pytest.mark.parametrize("name,make,reason", [
    ("badb64", lambda w: b"MII!!notbase64", b"base64"),
    ("baddr", lambda w: base64.b64encode(b"\x30\x82\x01\x00garbage"), b""),
    ("empty", lambda w: b"", b"empty body"),
    ("badsig", lambda w: (UNIT_DATA / "csr-badsig.pem").read_bytes(), b"signature"),
    ("rsa1024", lambda w: (UNIT_DATA / "csr-rsa1024.pem").read_bytes(), b"1024"),
    ("k256", lambda w: b64(make_csr(w, "k256", key="ec:secp256k1")), b""),
    ("p521", lambda w: b64(csr_p521(w)), b"secp521r1"),
])
def test_bad_csr_400(srv, work, name, make, reason):
    st, h, body = curl(srv, "simpleenroll", data=make(work), user="estuser:estpass")
    assert st == 400, body
    assert h["content-type"].startswith("text/plain")
    assert reason in body


def test_key_type_not_allowed_by_template(srv, work):
    der = make_csr(work, "p384only", key="ec:P-384")
    st, _, body = curl(srv, "p256only/simpleenroll", data=b64(der), user="estuser:estpass")
    assert st == 400 and b"not allowed" in body
    der = make_csr(work, "p256ok")
    assert curl(srv, "p256only/simpleenroll", data=b64(der), user="estuser:estpass")[0] == 200


def test_subject_rule(srv, work):
    der = make_csr(work, "nocn", subj="/O=NoCN")
    st, _, body = curl(srv, "simpleenroll", data=b64(der), user="estuser:estpass")
    assert st == 400 and b"commonName" in body


# simplereenroll (RFC 7030 4.2.2)

def test_reenroll(srv, work):
    der = make_csr(work, "re", subj="/CN=est-client")
    st, _, body = curl(srv, "simplereenroll", data=b64(der), cert="client")
    assert st == 200, body
    check_issued(srv, work, body, "re", subject="CN=est-client")


def test_reenroll_subject_mismatch_400(srv, work):
    der = make_csr(work, "re2", subj="/CN=someone-else")
    st, _, body = curl(srv, "simplereenroll", data=b64(der), cert="client")
    assert st == 400 and b"subject differs" in body
    der = make_csr(work, "re3", subj="/CN=est-client",
                   extra=["-addext", "subjectAltName=DNS:x.example"])
    st, _, body = curl(srv, "simplereenroll", data=b64(der), cert="client")
    assert st == 400 and b"subjectAltName differs" in body


@pytest.mark.parametrize("user,cert,reason", [
    (None, None, b"needs the TLS client certificate"),
    ("estuser:estpass", None, b"needs the TLS client certificate"),
    (None, "client-expired", b"expired"),
    (None, "client-revoked", b"revoked"),
    (None, "client-foreign", b"client certificate"),
])
def test_reenroll_refused_403(srv, work, user, cert, reason):
    der = make_csr(work, "re4", subj="/CN=est-client")
    st, _, body = curl(srv, "simplereenroll", data=b64(der), user=user, cert=cert)
    assert st == 403, body
    assert reason in body


# csrattrs (RFC 7030 4.5)

@pytest.mark.parametrize("label,challenge", [("", True), ("strict/", True), ("p256only/", False)])
def test_csrattrs(srv, work, label, challenge):
    st, h, body = curl(srv, label + "csrattrs")
    assert st == 200
    assert h["content-type"] == "application/csrattrs"
    der = base64.b64decode(re.sub(rb"\s", b"", body))
    f = work / "attrs.der"
    f.write_bytes(der)
    txt = openssl("asn1parse", "-inform", "DER", "-in", str(f)).stdout
    assert ("challengePassword" in txt) == challenge
    assert "ecdsa-with-SHA256" in txt and "prime256v1" in txt and "id-ecPublicKey" in txt
    assert ("rsaEncryption" in txt) == (label != "p256only/")
    assert txt.splitlines()[0].split(":")[-1].strip().startswith("cons: SEQUENCE") or "SEQUENCE" in txt.splitlines()[0]


# serverkeygen (RFC 7030 4.4)

@pytest.mark.parametrize("key,expect", [("ec:P-256", "prime256v1"), ("ec:P-384", "secp384r1"),
                                        ("rsa:2048", "2048 bit")])
def test_serverkeygen(srv, work, key, expect):
    der = make_csr(work, "skg", key=key, subj="/CN=skg")
    st, h, body = curl(srv, "serverkeygen", data=b64(der), user="estuser:estpass")
    assert st == 200, body
    m = re.match(r"multipart/mixed; boundary=(\S+)", h["content-type"])
    assert m
    boundary = m.group(1).encode()
    parts = body.split(b"--" + boundary)
    assert parts[-1].strip() == b"--"
    parts = [p for p in parts[1:-1]]
    assert len(parts) == 2
    hk, _, kb = parts[0].strip().partition(b"\r\n\r\n")
    hc, _, cb = parts[1].strip().partition(b"\r\n\r\n")
    assert b"Content-Type: application/pkcs8" in hk
    assert b"Content-Type: " + PKCS7.encode() in hc
    keyf = work / "skg.p8"
    keyf.write_bytes(base64.b64decode(re.sub(rb"\s", b"", kb)))
    ktxt = openssl("pkey", "-inform", "DER", "-in", str(keyf), "-noout", "-text").stdout
    assert expect in ktxt
    pem = check_issued(srv, work, cb, "skg", subject="CN=skg")
    pub1 = openssl("pkey", "-inform", "DER", "-in", str(keyf), "-pubout").stdout
    pub2 = openssl("x509", "-in", str(pem), "-noout", "-pubkey").stdout
    assert pub1 == pub2


def test_serverkeygen_needs_auth(srv, work):
    der = make_csr(work, "skg2")
    assert curl(srv, "serverkeygen", data=b64(der))[0] == 401


# Proof of possession (RFC 7030 3.5, RFC 9266)

def pop(srv, *args):
    p = run([POP, "--host", srv.addr, "--port", str(srv.port), "--cafile", srv.f("root.pem"),
             *args], timeout=60)
    assert p.returncode == 0, p.stderr
    out = dict(ln.split(" ", 1) for ln in p.stdout.splitlines()[:3])
    return out, p.stdout


@pytest.mark.parametrize("tls,btype", [("1.2", "tls-unique"), ("1.3", "tls-exporter")])
@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("auth", ["basic", "cert"])
def test_pop(srv, tls, btype, resume, auth):
    a = (["--user", "estuser", "--pass", "estpass"] if auth == "basic"
         else ["--cert", srv.f("client.pem"), "--key", srv.f("client.key")])
    r = ["--resume"] if resume else []
    out, _ = pop(srv, *a, *r, "--tls", tls, "--label", "strict", "--binding", "right")
    assert out["binding"] == btype
    assert out["reused"] == ("1" if resume else "0")
    assert out["status"] == "200"
    out, text = pop(srv, *a, *r, "--tls", tls, "--label", "strict", "--binding", "wrong")
    assert out["status"] == "400" and "proof of possession failed" in text
    out, text = pop(srv, *a, *r, "--tls", tls, "--label", "strict", "--binding", "none")
    assert out["status"] == "400" and "proof of possession required" in text


def test_pop_optional_and_off(srv):
    base = ["--user", "estuser", "--pass", "estpass"]
    assert pop(srv, *base, "--binding", "none")[0]["status"] == "200"
    assert pop(srv, *base, "--binding", "right")[0]["status"] == "200"
    assert pop(srv, *base, "--binding", "wrong")[0]["status"] == "400"
    # Off: challengePassword is not looked at.
    assert pop(srv, *base, "--label", "p256only", "--binding", "wrong")[0]["status"] == "200"


def test_pop_reenroll(srv):
    a = ["--cert", srv.f("client.pem"), "--key", srv.f("client.key"), "--op", "simplereenroll",
         "--label", "strict"]
    assert pop(srv, *a, "--binding", "right")[0]["status"] == "200"
    assert pop(srv, *a, "--binding", "wrong")[0]["status"] == "400"


# The chain-incomplete case (the product's troubleshooting step 1)

def test_chain_incomplete_503(tmp_path):
    s = Server(tmp_path, ADDR_INCOMPLETE, "--incomplete-chain")
    try:
        st, h, body = curl(s, "cacerts")
        assert st == 503 and b"chain incomplete" in body
        assert h["content-type"].startswith("text/plain")
        der = make_csr(tmp_path, "inc")
        st, _, body = curl(s, "simpleenroll", data=b64(der), user="estuser:estpass")
        assert st == 503
        assert curl(s, "csrattrs")[0] == 200
        assert "CA certificate chain incomplete" in s.logtext()
    finally:
        s.stop()


# Slow and bad clients

def tls_ctx(srv):
    ctx = ssl.create_default_context(cafile=srv.f("root.pem"))
    return ctx


def closed_by_peer(sock, deadline):
    """Wait until the server closes sock; True if it did before deadline."""
    sock.setblocking(False)
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.2)
        if r:
            try:
                data = sock.recv(4096)
            except (ConnectionResetError, ssl.SSLError, OSError):
                return True
            except ssl.SSLWantReadError:
                continue
            if data == b"":
                return True
    return False


def test_slowloris(srv, work):
    idle = [socket.create_connection((srv.addr, srv.port)) for _ in range(100)]
    # Slow-header client: handshake done, one header byte every 0.3 s.
    slow = tls_ctx(srv).wrap_socket(socket.create_connection((srv.addr, srv.port)),
                                    server_hostname=srv.addr)
    t0 = time.monotonic()
    slow.send(b"GET /.well-known/est/cacerts HTTP/1.1\r\n")
    dropped = False
    for ch in b"X-Slow: " + b"a" * 60:
        try:
            slow.send(bytes([ch]))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            dropped = True
            break
        if time.monotonic() - t0 > 1 and not getattr(test_slowloris, "served", False):
            # Meanwhile a normal request is served.
            assert curl(srv, "cacerts")[0] == 200
            test_slowloris.served = True
        r, _, _ = select.select([slow], [], [], 0.3)
        if r:
            try:
                if slow.recv(4096) == b"":
                    dropped = True
                    break
            except (ConnectionResetError, ssl.SSLError, OSError):
                dropped = True
                break
    elapsed = time.monotonic() - t0
    assert dropped, "slow-header client not dropped"
    assert elapsed < TIMEOUT + 4, elapsed
    deadline = time.monotonic() + TIMEOUT + 5
    for s in idle:
        assert closed_by_peer(s, deadline), "idle connection not dropped"
        s.close()
    slow.close()
    assert curl(srv, "cacerts")[0] == 200


def recv_all(sock, deadline):
    """What the server sends until it closes (or deadline)."""
    out = b""
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError, OSError):
            break
        if not d:
            break
        out += d
    return out


def test_lying_content_length_413_at_once(srv):
    """A body announced larger than 64 KiB is refused as soon as the
    headers are in: 413 without waiting for (or reading) the body, and the
    connection is closed after the answer."""
    s = tls_ctx(srv).wrap_socket(socket.create_connection((srv.addr, srv.port)),
                                 server_hostname=srv.addr)
    t0 = time.monotonic()
    s.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 99999999\r\n\r\n" + b"A" * 1000)
    data = recv_all(s, t0 + TIMEOUT + 5)
    elapsed = time.monotonic() - t0
    s.close()
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert b"request body too large" in data
    # At once, not at the request deadline: nothing waited for the body.
    assert elapsed < TIMEOUT, elapsed


def test_bad_requests_then_good(srv, work):
    ctx = tls_ctx(srv)
    junk = [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
            b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Length: 5\r\n\r\nxxxxx",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"]
    n = BAD_COUNT // 2
    for i in range(n):
        s = ctx.wrap_socket(socket.create_connection((srv.addr, srv.port), timeout=10),
                            server_hostname=srv.addr)
        try:
            s.sendall(junk[i % len(junk)])
            s.recv(4096)
        except (ConnectionResetError, ssl.SSLError, OSError):
            pass
        s.close()
    # Bad CSRs on keep-alive connections.
    auth = "Basic " + base64.b64encode(b"estuser:estpass").decode()
    conn = http.client.HTTPSConnection(srv.addr, srv.port, context=ctx, timeout=10)
    for i in range(BAD_COUNT - n):
        conn.request("POST", "/.well-known/est/simpleenroll", body=b"MIIBnotacsr" + str(i).encode(),
                     headers={"Content-Type": "application/pkcs10", "Authorization": auth})
        r = conn.getresponse()
        r.read()
        assert r.status == 400
    conn.close()
    der = make_csr(work, "aftergood")
    st, _, body = curl(srv, "simpleenroll", data=b64(der), user="estuser:estpass")
    assert st == 200, body


def test_log_lines(srv):
    log = srv.logtext()
    assert re.search(r"est DEBUG est: POST /.well-known/est/simpleenroll from 127\.0\.0\.1:\d+: 200, "
                     r"label \"\", auth basic estuser, subject CN=dev1, serial [0-9a-f]+, \d+ ms", log)
    assert re.search(r"est INFO est: POST \S+ from \S+ refused 401: ", log)
