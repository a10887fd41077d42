"""The PSN's OCSP responder on real executables (issue 5): a joined PSN
runs `psn run` (CA service, EST server, the PAN link that applies
revocation events) and, next to it on the same data directory, the
responder under test as `psn service ocsp` on the PSN's own address, port
2560.  Endpoint certificates are enrolled over EST; `openssl ocsp` and curl
judge the answers: good / revoked (time, reason) / hold / release,
unknown, unauthorized, SHA-256 CertIDs, nonces (echoed, 33 octets refused,
off), GET with RFC 5019 caching headers and byte-identical cached bodies,
every kind of bad input, idle connections, the legacy hierarchy (strict
RFC 6960 verification fails, trusting the responder directly works), and
a missing responder key (tryLater)."""

import base64
import re
import socket
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as est  # noqa: E402  (a module: pytest does not re-collect its tests)
from iselab import cert_serial, lab, openssl, run, tail, wait_for  # noqa: E402,F401

OCSP_PORT = 2560
# The unsigned answers (RFC 6960 4.2.1): OCSPResponse { responseStatus }.
MALFORMED = bytes.fromhex("30030a0101")
TRY_LATER = bytes.fromhex("30030a0103")
# id-pkix-ocsp-nonce, 1.3.6.1.5.5.7.48.1.2, as a DER OID.
NONCE_OID = bytes.fromhex("06092b0601050507300102")


# -- DER, just enough to put a nonce of any length into a request ----------

def tlv(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + content


def read_tlv(b, i=0):
    """(tag, content, end) of the TLV at b[i]."""
    tag, n, j = b[i], b[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        n, j = int.from_bytes(b[j:j + k], "big"), j + k
    return tag, b[j:j + n], j + n


def with_nonce(req, nonce):
    """An OCSPRequest without extensions (openssl ocsp -no_nonce) given a
    nonce extension holding nonce (RFC 8954: an OCTET STRING in extnValue)."""
    _, ocsp_req, _ = read_tlv(req)
    _, tbs, _ = read_tlv(ocsp_req)
    ext = tlv(0x30, NONCE_OID + tlv(0x04, tlv(0x04, nonce)))
    return tlv(0x30, tlv(0x30, tbs + tlv(0xA2, tlv(0x30, ext))))


# -- the responder -----------------------------------------------------------

def start_ocsp(lab, psn, ip, *extra):
    svc = est.Service(lab, psn, "ocsp", "--set", f"ocsp.listen={ip}:{OCSP_PORT}",
                      "--set", "log.level=debug", *extra)

    def up():
        svc.check_alive()
        return est.tcp_listening(ip, OCSP_PORT)
    wait_for(up, est.START_TIMEOUT, "the OCSP responder to listen", detail=svc.output)
    return svc


class Ocsp:
    """openssl ocsp and curl against http://IP:2560/ocsp, with the PSN's
    CA files: the Sub CA as issuer, the root as the only trust anchor, the
    Sub CA and the Node CA as untrusted intermediates (the response
    carries the responder certificate only)."""

    def __init__(self, lab, psn, ip):
        self.lab, self.psn, self.ip = lab, psn, ip
        d = psn.datadir / "ca"
        self.sub, self.root = d / "endpoint-sub-ca.crt", d / "root-ca.crt"
        self.chain = lab.tmp / "ocsp-chain.pem"
        self.chain.write_text(self.sub.read_text() + (d / "chain.pem").read_text())
        self.responder = d / "ocsp-responder.crt"
        self.url = f"http://{ip}:{OCSP_PORT}/ocsp"
        self.n = 0

    def check(self, *args, issuer=None, verify=None):
        """openssl ocsp against the responder: (returncode, stdout + stderr)."""
        if verify is None:
            verify = ["-CAfile", str(self.root), "-verify_other", str(self.chain)]
        p = openssl("ocsp", "-issuer", str(issuer or self.sub), "-url", self.url,
                    "-timeout", "20", *verify, *args, check=None)
        return p.returncode, p.stdout + p.stderr

    def status(self, cert, *args):
        """good / revoked / unknown for cert, after a strict verification."""
        rc, out = self.check(*args, "-cert", str(cert))  # a digest goes first
        assert "Response verify OK" in out, out
        m = re.search(rf"^{re.escape(str(cert))}: (\w+)", out, re.M)
        assert m, out
        return m.group(1), out

    def request_der(self, cert, *args):
        self.n += 1
        f = self.lab.tmp / f"ocsp-req-{self.n}.der"
        openssl("ocsp", "-issuer", str(self.sub), "-cert", str(cert), "-reqout", str(f),
                *args)
        return f.read_bytes()

    def http(self, path, *args, data=None, ctype="application/ocsp-request"):
        """curl: (status, headers text, body bytes)."""
        self.n += 1
        body, hdrs = self.lab.tmp / f"ocsp-{self.n}.body", self.lab.tmp / f"ocsp-{self.n}.hdrs"
        argv = ["curl", "-sS", "--max-time", "30", "-o", str(body), "-D", str(hdrs),
                "-w", "%{http_code}", *args]
        if data is not None:
            src = self.lab.tmp / f"ocsp-{self.n}.req"
            src.write_bytes(data)
            argv += ["-H", f"Content-Type: {ctype}", "--data-binary", f"@{src}"]
        argv.append(f"http://{self.ip}:{OCSP_PORT}{path}")
        p = run(argv, timeout=60)
        assert p.returncode == 0, f"curl {path}: {p.stderr}"
        return int(p.stdout), hdrs.read_text(errors="replace"), body.read_bytes()

    def get(self, der, urlsafe=False):
        b64 = base64.b64encode(der).decode()
        if urlsafe:
            b64 = base64.urlsafe_b64encode(der).decode().rstrip("=")
        return self.http("/ocsp/" + urllib.parse.quote(b64, safe="-_"))

    def text(self, body, cert):
        """openssl's reading of a response body: status lines and the
        verification result."""
        self.n += 1
        f = self.lab.tmp / f"ocsp-resp-{self.n}.der"
        f.write_bytes(body)
        p = openssl("ocsp", "-respin", str(f), "-issuer", str(self.sub), "-cert", str(cert),
                    "-CAfile", str(self.root), "-verify_other", str(self.chain), "-no_nonce",
                    "-resp_text", check=None)
        return p.stdout + p.stderr


def header(hdrs, name):
    m = re.search(rf"(?im)^{name}:\s*(.*?)\s*$", hdrs)
    return m.group(1) if m else None


def enroll(lab, pan, psn, names):
    """Endpoint certificates from the PSN's EST server, by the PSN's own EST
    client certificate (as test_est_psn does)."""
    e = est.Est(lab, psn, psn.address)
    key = est.plain_client_key(lab, psn)
    out = []
    for name in names:
        status, _, body = e.request("simpleenroll", "--cert",
                                    str(psn.datadir / "ca/est-client.crt"), "--key", str(key),
                                    data=est.make_csr(lab, name, name))
        assert status == 200, body
        out.append(est.issued_cert(lab, body, name))
    # Revocations are decided on the PAN: wait for the PSN's outbox to
    # have delivered them there.
    serials = [cert_serial(c) for c in out]
    wait_for(lambda: all(sn in pan.cli("cert", "list", "--node", "psn1",
                                                       check=True).stdout.lower()
                         for sn in serials),
             30, "the enrolled certificates to reach the PAN", detail=psn.log_text)
    return out


def ocsp_psn(lab, hierarchy=None):
    """A PAN (in hierarchy) and a joined PSN under `psn run`, which serves
    EST on the PSN's address and applies the PAN's events.  `psn run` is
    given another OCSP port, so that the responder under test (a
    standalone `psn service ocsp`) owns 2560 on that address whether or
    not `psn run` starts a responder of its own."""
    pan = lab.pan(hierarchy=hierarchy)
    js = pan.node_add("psn1", "psn")
    psn = lab.psn("psn1")
    psn.join(js, check=True)
    psn.run_args += ["--set", f"ocsp.listen={psn.address.ip}:{OCSP_PORT + 1}"]
    psn.start()
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
             "psn run to serve EST on 8084", detail=psn.log_text)
    return pan, psn


def revoke(pan, psn, verb, cert, *args):
    p = pan.cli("cert", verb, cert_serial(cert), *args, check=True)
    psn.wait_events(pan)
    return p


def test_ocsp_rfc6960(lab):
    pan, psn = ocsp_psn(lab)
    ip = psn.address.ip
    leaf1, leaf2, leaf3 = enroll(lab, pan, psn, ["ocsp-dev1", "ocsp-dev2", "ocsp-dev3"])
    svc = start_ocsp(lab, psn, ip)
    o = Ocsp(lab, psn, ip)

    # Good, strictly verified (responder issued by the Sub CA, RFC 6960
    # 4.2.2.2), the responder certificate included, responderID by key,
    # the nonce that openssl sends by default echoed (no warning).
    status, out = o.status(leaf1, "-resp_text")
    assert status == "good", out
    assert "WARNING" not in out, out
    assert re.search(r"This Update: .*\n\s*Next Update: ", out), out
    assert re.search(r"Responder Id: [0-9A-F]{40}\s", out), out
    assert "OCSP Nonce:" in out, out
    assert re.search(r"Subject: CN\s*=\s*Certificate Services OCSP Responder - psn1", out), out
    assert "OCSP No Check" in out and "OCSP Signing" in out, out
    # Without a nonce; and with SHA-256 CertIDs; and several in one request.
    assert o.status(leaf1, "-no_nonce")[0] == "good"
    assert o.status(leaf1, "-sha256")[0] == "good"
    rc, out = o.check("-cert", str(leaf1), "-cert", str(leaf2), "-cert", str(leaf3))
    assert "Response verify OK" in out, out
    assert len(re.findall(r": good\n", out)) == 3, out

    # GET (RFC 6960 A.1) with RFC 5019 caching headers.
    req1 = o.request_der(leaf1, "-no_nonce")
    code, hdrs, body1 = o.get(req1)
    assert code == 200, body1
    assert header(hdrs, "Content-Type") == "application/ocsp-response", hdrs
    cc = header(hdrs, "Cache-Control")
    m = re.fullmatch(r"max-age=(\d+), public, no-transform, must-revalidate", cc or "")
    assert m and 3500 < int(m.group(1)) <= 3600, hdrs
    etag = header(hdrs, "ETag")
    assert etag and re.fullmatch(r'"[0-9a-f]{40}"', etag), hdrs
    assert header(hdrs, "Last-Modified") and header(hdrs, "Expires"), hdrs
    t = o.text(body1, leaf1)
    assert "Response verify OK" in t and f"{leaf1}: good" in t, t
    # Expires is nextUpdate: what openssl reads as Next Update.
    nu = re.search(r"Next Update: (\w+ +\d+ [\d:]+ \d+) GMT", t).group(1)
    exp = time.strptime(header(hdrs, "Expires"), "%a, %d %b %Y %H:%M:%S GMT")
    assert time.strptime(nu, "%b %d %H:%M:%S %Y") == exp, (nu, hdrs)
    # The same GET again: the cached bytes, not a new signature.
    code, hdrs2, body2 = o.get(req1)
    assert code == 200 and body2 == body1
    assert header(hdrs2, "ETag") == etag
    # base64url without padding, unencoded, is the same request.
    code, _, body3 = o.get(req1, urlsafe=True)
    assert code == 200 and body3 == body1
    # A POST answer is not for HTTP caches.
    code, hdrs, body = o.http("/ocsp", data=req1)
    assert code == 200 and body == body1
    assert header(hdrs, "Cache-Control") == "no-cache, no-store", hdrs
    # A GET with a nonce is signed on the fly and not cacheable.
    req_n = o.request_der(leaf1)
    code, hdrs, b1 = o.get(req_n)
    code, hdrs, b2 = o.get(req_n)
    assert code == 200 and b1 != b2, "a nonce answer must be signed each time"
    assert header(hdrs, "Cache-Control") == "no-cache, no-store", hdrs

    # Revoked on the PAN with keyCompromise: the event reaches the PSN's
    # store, and the responder answers revoked with time and reason.
    t0 = time.time()
    revoke(pan, psn, "revoke", leaf1, "--reason", "keyCompromise")
    status, out = o.status(leaf1)
    assert status == "revoked", out
    assert re.search(r"Reason: keyCompromise", out), out
    rt = re.search(r"Revocation Time: (\w+ +\d+ [\d:]+ \d+) GMT", out)
    assert rt, out
    assert abs(time.mktime(time.strptime(rt.group(1), "%b %d %H:%M:%S %Y"))
               - time.timezone - t0) < 120, out
    # The GET body changed with it, and is cached again.
    code, hdrs, body4 = o.get(req1)
    assert code == 200 and body4 != body1
    assert header(hdrs, "ETag") != etag
    assert f"{leaf1}: revoked" in o.text(body4, leaf1)
    assert o.get(req1)[2] == body4

    # Hold is revoked with certificateHold; release is good again.
    revoke(pan, psn, "hold", leaf2)
    status, out = o.status(leaf2)
    assert status == "revoked" and "Reason: certificateHold" in out, out
    revoke(pan, psn, "release", leaf2)
    assert o.status(leaf2)[0] == "good"

    # A serial our Sub CA never issued: unknown.
    rc, out = o.check("-serial", "0x1234567890abcdef")
    assert "Response verify OK" in out and re.search(r"0x1234567890abcdef: unknown", out), out
    # A certificate of another CA (the Sub CA itself, issued by the Node
    # CA, which this PSN does not serve): unauthorized.
    node_ca = lab.tmp / "node-ca.pem"
    node_ca.write_text(est.split_pem(o.chain.read_text())[1])
    rc, out = o.check("-cert", str(o.sub), issuer=node_ca)
    assert "Responder Error: unauthorized (6)" in out, out

    # Nonces: 32 octets echoed, 33 refused (RFC 8954), none is fine.
    plain = o.request_der(leaf3, "-no_nonce")
    code, _, body = o.http("/ocsp", data=with_nonce(plain, b"\x5a" * 32))
    assert code == 200 and body not in (MALFORMED,), body
    assert b"\x5a" * 32 in body
    code, _, body = o.http("/ocsp", data=with_nonce(plain, b"\x5a" * 33))
    assert code == 200 and body == MALFORMED, body
    code, _, body = o.get(with_nonce(plain, b"\x5a" * 33))
    assert code == 200 and body == MALFORMED, body

    # Bad input: each answered, the responder still serving afterwards.
    code, _, body = o.http("/ocsp", data=b"\x30\x82garbage" * 10)
    assert code == 200 and body == MALFORMED, body
    code, _, body = o.http("/ocsp", data=b"")
    assert code == 200 and body == MALFORMED, body
    code, _, body = o.http("/ocsp/!!!not-base64!!!")
    assert code == 200 and body == MALFORMED, body
    code, _, body = o.http("/ocsp/MEow")
    assert code == 200 and body == MALFORMED, body
    code, _, body = o.http("/ocsp", data=req1, ctype="application/octet-stream")
    assert code == 415, body
    code, hdrs, body = o.http("/ocsp", data=b"\x30" * (70 * 1024))
    assert code == 413, body
    code, hdrs, body = o.http("/nosuchpath")
    assert code == 404 and header(hdrs, "Content-Type").startswith("text/plain"), hdrs
    code, hdrs, body = o.http("/ocsp", "-X", "PUT")
    assert code == 405 and "GET, POST" in (header(hdrs, "Allow") or ""), hdrs
    # 413 comes from the headers alone: the body is never waited for.
    with socket.create_connection((ip, OCSP_PORT), timeout=10) as s:
        s.sendall(b"POST /ocsp HTTP/1.1\r\nHost: psn1\r\nContent-Type: "
                  b"application/ocsp-request\r\nContent-Length: 71680\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413"), "no 413 before the body"
    assert o.status(leaf3)[0] == "good"

    log = psn.log_text()
    assert re.search(r"ocsp.*POST /ocsp from 127\.[\d.]+:\d+: malformedRequest: not a DER", log)
    assert re.search(r"ocsp.*nonce of 33 octets \(RFC 8954", log)
    assert re.search(r"ocsp.*serial [0-9a-f]+ good \(cached\)", log), tail(psn.log_path)
    # The responder holds the responder key, no CA key.
    assert "signing with the OCSP responder key" in log
    svc.stop()


def closed(s):
    """Whether the server closes s (a 408 first is fine) before s's timeout."""
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
            assert data.startswith(b"HTTP/1.1 408"), data
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def test_ocsp_idle_connections_and_nonce_off(lab):
    """Connections that send nothing, or half a request, are dropped after
    ocsp.timeout; the responder serves others meanwhile and afterwards.
    With ocsp.nonce=off (RFC 5019 profile) nonces are ignored."""
    pan, psn = ocsp_psn(lab)
    ip = psn.address.ip
    (leaf,) = enroll(lab, pan, psn, ["idle-dev"])
    svc = start_ocsp(lab, psn, ip, "--set", "ocsp.timeout=4s", "--set", "ocsp.workers=1",
                     "--set", "ocsp.nonce=off")
    o = Ocsp(lab, psn, ip)
    # Closed at once without a request: costs nothing.
    for _ in range(20):
        socket.create_connection((ip, OCSP_PORT), timeout=5).close()
    idle = [socket.create_connection((ip, OCSP_PORT), timeout=10) for _ in range(5)]
    half = socket.create_connection((ip, OCSP_PORT), timeout=10)
    half.sendall(b"POST /ocsp HTTP/1.1\r\nHost: psn1\r\n")
    t0 = time.monotonic()
    # A slowloris client never idle: a header byte every half second.
    slow = socket.create_connection((ip, OCSP_PORT), timeout=10)
    slow.sendall(b"GET /ocsp/")
    slow_closed = None
    for _ in range(40):
        try:
            slow.sendall(b"A")
        except OSError:
            slow_closed = time.monotonic() - t0
            break
        time.sleep(0.5)
    assert slow_closed is not None and slow_closed < 8, \
        f"a trickling client was not dropped ({slow_closed})"
    # One worker, seven connections: still served, before they go.
    assert o.status(leaf)[0] == "good"
    for s in idle + [half]:
        assert closed(s), "a connection was not closed"
    waited = time.monotonic() - t0
    assert 3 < waited < 12, f"idle connections closed after {waited:.1f}s"
    # Nonce off: openssl's nonce is not echoed (it warns, and still
    # verifies), and even a 33-octet one is answered from the cache.
    status, out = o.status(leaf)
    assert status == "good" and "WARNING: no nonce in response" in out, out
    plain = o.request_der(leaf, "-no_nonce")
    code, _, cached = o.get(plain)
    code, _, body = o.http("/ocsp", data=with_nonce(plain, b"\x33" * 33))
    assert code == 200 and body == cached, body
    svc.stop()


def test_ocsp_legacy_hierarchy_and_no_key(lab):
    pan, psn = ocsp_psn(lab, hierarchy="legacy")
    ip = psn.address.ip
    (leaf,) = enroll(lab, pan, psn, ["legacy-dev"])
    o = Ocsp(lab, psn, ip)
    # The responder certificate is the PAN's Node CA's, not the Sub CA's.
    assert est.cert_issuer(o.responder) == est.NODE_CA_CN
    svc = start_ocsp(lab, psn, ip)
    # Strict: RFC 6960 4.2.2.2 refuses a delegate the Sub CA did not issue.
    rc, out = o.check("-cert", str(leaf))
    assert "Response Verify Failure" in out and "Response verify OK" not in out, out
    assert "root ca not trusted" in out, out
    print("legacy, strict verification:\n" + out)
    # Trusting the responder certificate directly (-VAfile) works.
    rc, out = o.check("-cert", str(leaf), verify=["-VAfile", str(o.responder)])
    assert "Response verify OK" in out and f"{leaf}: good" in out, out
    assert re.search(r"ocsp.*legacy hierarchy", psn.log_text())
    svc.stop()

    # The responder key unavailable: tryLater, and the process serves.
    key = psn.datadir / "ca/ocsp-responder.key"
    key.rename(key.with_suffix(".away"))
    svc = start_ocsp(lab, psn, ip)
    code, _, body = o.http("/ocsp", data=o.request_der(leaf, "-no_nonce"))
    assert code == 200 and body == TRY_LATER, body
    rc, out = o.check("-cert", str(leaf))
    assert "Responder Error: trylater (3)" in out, out
    # Still judged: garbage is malformed, others' certificates unauthorized.
    code, _, body = o.http("/ocsp", data=b"junk")
    assert body == MALFORMED
    assert "OCSP responder key unavailable" in psn.log_text()
    # ... and an alarm on the PAN, through the node's daemon.
    wait_for(lambda: "OCSP Responder Key Unavailable" in pan.alarms(), 30,
             "the key alarm on the PAN", detail=lambda: pan.alarms() + tail(psn.log_path))
    svc.stop()
    # The key back: the next responder clears it.
    key.with_suffix(".away").rename(key)
    svc = start_ocsp(lab, psn, ip)
    wait_for(lambda: "OCSP Responder Key Unavailable" not in pan.alarms(), 30,
             "the key alarm to clear", detail=lambda: pan.alarms())
    code, _, body = o.http("/ocsp", data=o.request_der(leaf, "-no_nonce"))
    assert code == 200 and body != TRY_LATER and body != MALFORMED
    svc.stop()
