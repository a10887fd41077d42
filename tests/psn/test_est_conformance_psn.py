"""EST conformance (RFC 7030 / RFC 8951, issue 4) against a REAL PSN: one
PAN and one joined PSN running `psn run`, enrollment users and templates
defined on the PAN (`pan user add`, `pan template add`) and replicated to
the PSN, and every answer judged with independent tools: curl, the openssl
CLI (verify, pkcs7, cms, asn1parse, s_client), zlint, mdb_dump on the PSN's
store, `pan cert list`, and tests/est/est_pop_client for proof of
possession by TLS channel binding (which curl cannot do).

tests/est/test_est_conformance.py checks the same core against an
in-process harness backend; here the backend is the PSN's (CA service,
store, replicated users and templates) and the checks are end to end.

The PAN and PSN are module-scoped (starting them costs seconds, ten times
that under ASan): tests run in file order, each leaves the PSN as it found
it, and the few that change it (the chain-incomplete case) put it back.
"""

import base64
import http.client
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as estpsn  # noqa: E402  (a module: its tests are not re-collected)
from iselab import (BUILD, Lab, _group_pids, cert_serial, cert_subject,  # noqa: E402
                    cert_text, ext_key_usage, openssl, run, split_pem, subject_alt_names,
                    wait_for, zlint_findings)

EST_PORT = 8084
HOST = "psn1"                  # the name in the PSN's EST server certificate
USER, PASSWORD = "confuser", "conf-password-1"
REALM = 'Basic realm="ISE EST psn1"'
PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
EST_TIMEOUT = 2                # est.timeout of this PSN, seconds (slowloris)
SHORT_VALIDITY = 310           # the "short" template: 5 min backdate + 10 s
POP = str(BUILD / "tests/est/est_pop_client")
UNIT_DATA = Path(__file__).resolve().parents[1] / "unit/data"
# Fewer bad requests under the sanitizers, where a handshake costs 10x.
BAD_COUNT = int(os.environ.get("ISELAB_EST_BAD_COUNT", "1000"))
SUB_CA = "CN=Certificate Services Endpoint Sub CA - psn1"
NODE_CA = "CN=Certificate Services Node CA - pan1"
ROOT = "CN=Certificate Services Root CA - pan1"


class Env:
    """The running deployment and what the tests share."""

    def __init__(self, lab, pan, psn):
        self.lab, self.pan, self.psn = lab, pan, psn
        self.tmp = lab.tmp
        self.ip = psn.address.ip
        ca = psn.datadir / "ca"
        self.root = ca / "root-ca.crt"
        self.untrusted = self.tmp / "untrusted.pem"
        self.untrusted.write_text((ca / "endpoint-sub-ca.crt").read_text() +
                                  (ca / "chain.pem").read_text())
        self.client_cert = ca / "est-client.crt"
        self.client_key = estpsn.plain_client_key(lab, psn)
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}-{self.n}"

    def est_pid(self):
        for pid in _group_pids(self.psn.pgid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "est":
                    return pid
            except OSError:
                pass
        return None


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    """One PAN, one PSN under `psn run` (EST on the PSN's own address,
    est.timeout=2s), a user and five templates defined on the PAN."""
    lab = Lab(tmp_path_factory.mktemp("est-conf-psn"))
    failed_before = request.session.testsfailed
    try:
        pan = lab.pan()
        js = pan.node_add("psn1", "psn")
        psn = lab.psn("psn1")
        psn.join(js, check=True)
        psn.start("--set", f"est.timeout={EST_TIMEOUT}s", "--set", "log.level=debug")
        wait_for(lambda: estpsn.tcp_listening(psn.address.ip), estpsn.START_TIMEOUT,
                 "psn run to serve EST", detail=psn.log_text)
        # Defined on the PAN while the PSN runs: they reach it as events.
        pan.user_add(USER, PASSWORD)
        pan.template_add("strict", "--pop", "required")
        pan.template_add("nopop", "--pop", "off")
        pan.template_add("server", "--profile", "tls-server", "--validity", "90d")
        pan.template_add("p256only", "--key-types", "ec:p256", "--keygen", "ec:p256",
                         "--pop", "off", "--require-cn", "no")
        pan.template_add("short", "--validity", f"{SHORT_VALIDITY}s")
        psn.wait_events(pan)
        yield Env(lab, pan, psn)
    finally:
        lab.close(request.session.testsfailed > failed_before)


# -- clients -----------------------------------------------------------------

def curl(env, path, *args, data=None, ctype="application/pkcs10", user=None, cert=None,
         headers=(), method=None):
    """curl to https://psn1:8084/.well-known/est/PATH on the PSN's address,
    trusting the deployment's root only.  (status, {header: value}, body)."""
    cmd = ["curl", "-sS", "--max-time", "60", "--resolve", f"{HOST}:{EST_PORT}:{env.ip}",
           "--cacert", str(env.root), "-D", "-", "-o", "-"]
    if method:
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", "@-"]
        if ctype:
            cmd += ["-H", "Content-Type: " + ctype]
    if user:
        cmd += ["-u", user]
    if cert:
        cmd += ["--cert", str(cert[0]), "--key", str(cert[1])]
    for h in headers:
        cmd += ["-H", h]
    cmd += [*args, f"https://{HOST}:{EST_PORT}/.well-known/est/{path}"]
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


def basic(env):
    return f"{USER}:{PASSWORD}"


def client(env):
    return (env.client_cert, env.client_key)


def make_csr(env, name, key="ec:P-256", subj=None, extra=()):
    """A CSR made by `openssl req` (key kept as NAME.key); its DER."""
    kfile, der = env.tmp / f"{name}.key", env.tmp / f"{name}.csr.der"
    if key.startswith("ec:"):
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:" + key[3:]]
    else:
        newkey = ["-newkey", key]
    openssl("req", "-new", *newkey, "-nodes", "-keyout", str(kfile),
            "-subj", subj or f"/CN={name}", *extra, "-outform", "DER", "-out", str(der))
    return der.read_bytes()


def b64(der, lines=True):
    s = base64.b64encode(der)
    if lines:
        s = b"\n".join(s[i:i + 64] for i in range(0, len(s), 64)) + b"\n"
    return s


def b64_body(body):
    """Decode a base64 answer; RFC 7030 4.1.3: lines of at most 64, CRLF."""
    lines = body.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) >= 2, body[:200]
    assert all(0 < len(ln) <= 64 for ln in lines[:-1]), body[:200]
    return base64.b64decode(b"".join(lines), validate=True)


def pkcs7_certs(env, body, name):
    """The certificates of a base64 certs-only answer, as PEM texts."""
    der = env.tmp / f"{name}.p7.der"
    der.write_bytes(b64_body(body))
    out = openssl("pkcs7", "-inform", "DER", "-in", str(der), "-print_certs").stdout
    return split_pem(out), der


def validity_seconds(pem):
    out = openssl("x509", "-in", str(pem), "-noout", "-startdate", "-enddate").stdout
    nb = re.search(r"notBefore=(.*)", out).group(1)
    na = re.search(r"notAfter=(.*)", out).group(1)
    fmt = "%b %d %H:%M:%S %Y %Z"
    return time.mktime(time.strptime(na, fmt)) - time.mktime(time.strptime(nb, fmt))


def check_issued(env, body, name, cn, eku="TLS Web Client Authentication",
                 purpose="sslclient", validity=730 * 86400):
    """The answer of a successful enrollment: certs-only with exactly the
    issued certificate, which verifies against the deployment's root,
    carries the template's EKU and validity, passes zlint, and is in the
    PSN's store."""
    certs, _ = pkcs7_certs(env, body, name)
    assert len(certs) == 1, "only the issued certificate (RFC 7030 4.2.3)"
    pem = env.tmp / f"{name}.pem"
    pem.write_text(certs[0])
    assert cert_subject(pem) == f"CN={cn}"
    p = openssl("verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(env.root),
                "-untrusted", str(env.untrusted), str(pem), check=None)
    assert p.returncode == 0, p.stdout + p.stderr
    assert ext_key_usage(cert_text(pem)) == (False, eku)
    assert validity_seconds(pem) == validity
    findings = zlint_findings(pem)
    assert not findings, f"zlint {findings}"
    serial = cert_serial(pem).lstrip("0")
    assert serial in store_text(env), f"serial {serial} not in the PSN's store"
    return pem


def store_text(env):
    return estpsn.mdb_dump(env.psn, "certs").replace("\n", "").replace(" ", "")


def pan_certs(env):
    return env.pan.cli("cert", "list", "--node", "psn1", check=True).stdout


def settled(env):
    """The PSN's outbox is empty: the PAN has every certificate the PSN
    issued, so `pan cert list` changes only if something new is issued."""
    def empty():
        # mdb_dump: header lines, then one line per key and value, " "-led.
        dump = estpsn.mdb_dump(env.psn, "outbox")
        return not any(ln.startswith(" ") for ln in dump.splitlines())
    wait_for(empty, 60, "the PSN's outbox to be delivered to the PAN",
             detail=lambda: estpsn.mdb_dump(env.psn, "outbox") + env.psn.diagnostics())


@contextmanager
def nothing_stored(env):
    """Every refusal: no certificate in the PSN's store, none at the PAN."""
    settled(env)
    store, listed = estpsn.mdb_dump(env.psn, "certs"), pan_certs(env)
    yield
    assert estpsn.mdb_dump(env.psn, "certs") == store, "a refusal stored a certificate"
    time.sleep(0.2)
    assert pan_certs(env) == listed, "a refusal reached the PAN"


def refused(env, status, want, reason, hdrs, body):
    assert status == want, (status, body)
    assert hdrs["content-type"].startswith("text/plain"), hdrs
    assert reason in body, body


def pop(env, *args, check=True):
    """est_pop_client against the PSN: (fields, full output)."""
    p = run([POP, "--host", env.ip, "--port", str(EST_PORT), "--servername", HOST,
             "--cafile", str(env.root), *args], timeout=120)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    out = dict(ln.split(" ", 1) for ln in p.stdout.splitlines()[:3] if " " in ln)
    return out, p.stdout


def device_cert(env, cn, label=""):
    """A device certificate issued by Basic, with its key."""
    der = make_csr(env, cn)
    st, _, body = curl(env, label + "simpleenroll", data=b64(der), user=basic(env))
    assert st == 200, body
    certs, _ = pkcs7_certs(env, body, cn)
    pem = env.tmp / f"{cn}.pem"
    pem.write_text(certs[0])
    return pem, env.tmp / f"{cn}.key"


def foreign_client(env):
    """A client certificate from a CA that is not the deployment's."""
    ca_key, ca = env.tmp / "foreign-ca.key", env.tmp / "foreign-ca.pem"
    if not ca.exists():
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(ca_key), "-subj", "/CN=Foreign CA", "-days", "2",
                "-out", str(ca))
        key, csr = env.tmp / "foreign.key", env.tmp / "foreign.csr"
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(key), "-subj", "/CN=psn1", "-out", str(csr))
        ext = env.tmp / "foreign.ext"
        ext.write_text("extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                "-CAcreateserial", "-days", "1", "-extfile", str(ext),
                "-out", str(env.tmp / "foreign.pem"))
    return (env.tmp / "foreign.pem", env.tmp / "foreign.key")


# -- cacerts (RFC 7030 4.1) --------------------------------------------------

@pytest.mark.parametrize("tls", [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]],
                         ids=["tls1.2", "tls1.3"])
def test_cacerts(env, tls):
    st, h, body = curl(env, "cacerts", *tls)
    assert st == 200, body
    assert h["content-type"] == PKCS7
    assert h["content-transfer-encoding"] == "base64"
    certs, der = pkcs7_certs(env, body, env.name("cacerts"))
    subjects = []
    for i, c in enumerate(certs):
        f = env.tmp / f"cacert{i}.pem"
        f.write_text(c)
        subjects.append(cert_subject(f))
    # The whole chain: Sub CA, Node CA, Root CA.
    assert subjects == [SUB_CA, NODE_CA, ROOT]
    # Each verifies against the root the client trusts.
    p = openssl("verify", "-x509_strict", "-CAfile", str(env.root),
                "-untrusted", str(env.tmp / "cacert1.pem"), str(env.tmp / "cacert0.pem"),
                check=None)
    assert p.returncode == 0, p.stdout + p.stderr
    # A CMC Simple PKI Response: no signer, no content (RFC 5272 4.1).
    txt = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(der)).stdout
    assert re.search(r"signerInfos:\s*<EMPTY>", txt), txt
    assert re.search(r"eContent:\s*<ABSENT>", txt), txt


def test_cacerts_with_labels_and_bad_paths(env):
    assert curl(env, "strict/cacerts")[0] == 200
    assert curl(env, "default/cacerts")[0] == 200
    st, h, body = curl(env, "nosuchlabel/cacerts")
    refused(env, st, 404, b'unknown label "nosuchlabel"', h, body)
    assert curl(env, "cacertz")[0] == 404
    assert curl(env, "a/b/cacerts")[0] == 404
    st, h, _ = curl(env, "cacerts", method="POST", data=b"x")
    assert st == 405 and h["allow"] == "GET"


# -- simpleenroll (RFC 7030 4.2) ---------------------------------------------

@pytest.mark.parametrize("key", ["ec:P-256", "ec:P-384", "rsa:2048", "rsa:3072", "rsa:4096"])
def test_enroll_basic_key_types(env, key):
    name = env.name("key")
    st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, name, key=key)),
                       user=basic(env))
    assert st == 200, body
    assert h["content-type"] == PKCS7
    check_issued(env, body, name, name)


@pytest.mark.parametrize("lines", [True, False], ids=["lines", "oneline"])
@pytest.mark.parametrize("cte", [True, False], ids=["cte", "nocte"])
def test_enroll_encodings(env, lines, cte):
    """RFC 8951 3.2: base64 with or without line breaks, with or without
    Content-Transfer-Encoding."""
    name = env.name("enc")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name), lines),
                       user=basic(env),
                       headers=["Content-Transfer-Encoding: base64"] if cte else [])
    assert st == 200, body
    check_issued(env, body, name, name)


@pytest.mark.parametrize("tls,proto", [(["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                                       (["--tlsv1.3"], "TLSv1.3")], ids=["tls1.2", "tls1.3"])
def test_enroll_tls_versions(env, tls, proto):
    name = env.name("tls")
    st, _, body = curl(env, "simpleenroll", *tls, data=b64(make_csr(env, name)),
                       cert=client(env))
    assert st == 200, body
    check_issued(env, body, name, name)
    # openssl s_client sees the same version, and the server's chain
    # verifies up to the deployment's root under the name psn1.
    flag = "-tls1_2" if proto == "TLSv1.2" else "-tls1_3"
    p = openssl("s_client", "-connect", f"{env.ip}:{EST_PORT}", flag, "-servername", HOST,
                "-verify_hostname", HOST, "-CAfile", str(env.root), "-verify_return_error",
                input="", check=None)
    assert f"Protocol  : {proto}" in p.stdout or f"New, {proto}" in p.stdout, p.stdout
    assert "Verify return code: 0 (ok)" in p.stdout, p.stdout


@pytest.mark.parametrize("proto", ["-tls1", "-tls1_1"])
def test_old_tls_no_handshake(env, proto):
    p = openssl("s_client", "-connect", f"{env.ip}:{EST_PORT}", proto,
                "-cipher", "DEFAULT@SECLEVEL=0", input="", check=None)
    assert p.returncode != 0
    # The server's alert, not the client's refusal: SECLEVEL=0 lets the
    # client offer the old version.
    assert "alert protocol version" in p.stdout + p.stderr, p.stdout + p.stderr


def test_enroll_with_psn_client_cert(env):
    """TLS client certificate chaining to the deployment: the PSN's own EST
    client (an RA enrolling endpoints on their behalf)."""
    name = env.name("bycert")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)), cert=client(env))
    assert st == 200, body
    check_issued(env, body, name, name)


def test_enroll_with_device_cert(env):
    """An endpoint certificate this PSN issued authenticates the next
    enrollment."""
    cert, key = device_cert(env, env.name("dev"))
    name = env.name("bydev")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)), cert=(cert, key))
    assert st == 200, body
    check_issued(env, body, name, name)


def test_unauthenticated_401(env):
    with nothing_stored(env):
        st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, env.name("unauth"))))
    refused(env, st, 401, b"authentication required", h, body)
    assert h["www-authenticate"] == REALM


@pytest.mark.parametrize("who", ["wrong-password", "unknown-user", "foreign-cert",
                                 "removed-user"])
def test_bad_credentials_401(env, who):
    kw = {}
    if who == "wrong-password":
        kw["user"], reason = f"{USER}:wrong-password", b"wrong user name or password"
    elif who == "unknown-user":
        kw["user"], reason = f"nobody:{PASSWORD}", b"wrong user name or password"
    elif who == "foreign-cert":
        kw["cert"], reason = foreign_client(env), b"client certificate"
    else:
        # A user removed on the PAN is gone from the PSN too.
        env.pan.user_add("leaving", "leaving-password-1")
        env.psn.wait_events(env.pan)
        name = env.name("leaving")
        st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)),
                           user="leaving:leaving-password-1")
        assert st == 200, body
        env.pan.cli("user", "remove", "leaving", check=True)
        env.psn.wait_events(env.pan)
        kw["user"], reason = "leaving:leaving-password-1", b"wrong user name or password"
    with nothing_stored(env):
        st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, env.name("bad"))), **kw)
    refused(env, st, 401, reason, h, body)
    assert h["www-authenticate"] == REALM


# -- refusals of the request itself ------------------------------------------

def test_wrong_content_type_415(env):
    der = make_csr(env, env.name("ct"))
    with nothing_stored(env):
        st, h, body = curl(env, "simpleenroll", data=b64(der), ctype="text/plain",
                           user=basic(env))
    refused(env, st, 415, b"application/pkcs10", h, body)
    # Parameters are fine.
    st, _, body = curl(env, "simpleenroll", data=b64(der), ctype="application/pkcs10; x=y",
                       user=basic(env))
    assert st == 200, body


def test_body_over_64k_413(env):
    with nothing_stored(env):
        st, h, body = curl(env, "simpleenroll", data=b"A" * (64 * 1024 + 1), user=basic(env))
    refused(env, st, 413, b"request body too large: at most 65536 bytes", h, body)
    assert h["connection"] == "close"


def test_body_over_64k_announced_413_at_once(env):
    """Content-Length over the limit: 413 before the body comes, and the
    connection is closed after it."""
    ctx = ssl.create_default_context(cafile=str(env.root))
    s = ctx.wrap_socket(socket.create_connection((env.ip, EST_PORT), timeout=30),
                        server_hostname=HOST)
    t0 = time.monotonic()
    s.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: psn1\r\n"
              b"Content-Type: application/pkcs10\r\nContent-Length: 99999999\r\n\r\n")
    data = recv_until_closed(s, t0 + 30)
    s.close()
    assert data.startswith(b"HTTP/1.1 413 "), data
    assert b"Content-Type: text/plain" in data and b"<HTML" not in data.upper(), data
    assert time.monotonic() - t0 < EST_TIMEOUT, "413 waited for the body"


def csr_file(name):
    return (UNIT_DATA / name).read_bytes()


BAD_CSRS = {
    "bad-base64": (lambda env: b"MII!!notbase64", b"base64"),
    "bad-der": (lambda env: base64.b64encode(b"\x30\x82\x01\x00garbage"), b"CSR"),
    "empty": (lambda env: b"", b"empty body"),
    "bad-signature": (lambda env: csr_file("csr-badsig.pem"), b"signature"),
    "rsa-1024": (lambda env: csr_file("csr-rsa1024.pem"), b"1024"),
    "secp256k1": (lambda env: b64(make_csr(env, env.name("k1"), key="ec:secp256k1")),
                  b"secp256k1"),
    "p-521": (lambda env: b64(make_csr(env, env.name("p521"), key="ec:P-521")), b"secp521r1"),
    "no-cn": (lambda env: b64(make_csr(env, env.name("nocn"), subj="/O=NoCN")),
              b"commonName"),
}


@pytest.mark.parametrize("what", sorted(BAD_CSRS))
def test_bad_csr_400(env, what):
    make, reason = BAD_CSRS[what]
    data = make(env)
    with nothing_stored(env):
        st, h, body = curl(env, "simpleenroll", data=data, user=basic(env))
    refused(env, st, 400, reason, h, body)


def test_unparsable_request_400_plain_text(env):
    ctx = ssl.create_default_context(cafile=str(env.root))
    s = ctx.wrap_socket(socket.create_connection((env.ip, EST_PORT), timeout=30),
                        server_hostname=HOST)
    s.sendall(b"GARBAGE\r\n\r\n")
    data = recv_until_closed(s, time.monotonic() + 30)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), data
    assert b"Content-Type: text/plain" in head, data
    assert body.startswith(b"bad request:"), data


# -- templates (labels) ------------------------------------------------------

def test_label_unknown_404(env):
    with nothing_stored(env):
        st, h, body = curl(env, "nosuchlabel/simpleenroll",
                           data=b64(make_csr(env, env.name("nolabel"))), user=basic(env))
    refused(env, st, 404, b"unknown label", h, body)


def test_label_server_profile(env):
    name = env.name("srv")
    csr = make_csr(env, name, extra=["-addext", f"subjectAltName=DNS:{name}.example"])
    st, _, body = curl(env, "server/simpleenroll", data=b64(csr), user=basic(env))
    assert st == 200, body
    pem = check_issued(env, body, name, name, eku="TLS Web Server Authentication",
                       purpose="sslserver", validity=90 * 86400)
    assert subject_alt_names(cert_text(pem)) == [f"DNS:{name}.example"]
    # The CA service's own rule for the profile: a server name is needed.
    with nothing_stored(env):
        st, h, body = curl(env, "server/simpleenroll", data=b64(make_csr(env, env.name("srv"))),
                           user=basic(env))
    refused(env, st, 400, b"needs a DNS or IP subjectAltName", h, body)


def test_label_key_types(env):
    with nothing_stored(env):
        st, h, body = curl(env, "p256only/simpleenroll",
                           data=b64(make_csr(env, env.name("p384"), key="ec:P-384")),
                           user=basic(env))
    refused(env, st, 400, b"not allowed by template p256only", h, body)
    name = env.name("p256")
    st, _, body = curl(env, "p256only/simpleenroll", data=b64(make_csr(env, name)),
                       user=basic(env))
    assert st == 200, body
    check_issued(env, body, name, name)


def test_label_added_and_removed_on_the_pan(env):
    """A template defined on the PAN while the PSN runs is served as soon
    as its event is applied, and gone when it is removed."""
    env.pan.template_add("latecomer", "--validity", "7d")
    env.psn.wait_events(env.pan)
    name = env.name("late")
    st, _, body = curl(env, "latecomer/simpleenroll", data=b64(make_csr(env, name)),
                       user=basic(env))
    assert st == 200, body
    check_issued(env, body, name, name, validity=7 * 86400)
    env.pan.cli("template", "remove", "latecomer", check=True)
    env.psn.wait_events(env.pan)
    with nothing_stored(env):
        st, h, body = curl(env, "latecomer/simpleenroll",
                           data=b64(make_csr(env, env.name("late"))), user=basic(env))
    refused(env, st, 404, b"unknown label", h, body)


# -- csrattrs (RFC 7030 4.5) -------------------------------------------------

@pytest.mark.parametrize("label,challenge,rsa", [("", True, True), ("strict/", True, True),
                                                 ("nopop/", False, True),
                                                 ("p256only/", False, False)])
def test_csrattrs(env, label, challenge, rsa):
    st, h, body = curl(env, label + "csrattrs")
    assert st == 200, body
    assert h["content-type"] == "application/csrattrs"
    f = env.tmp / env.name("attrs")
    f.write_bytes(b64_body(body))
    txt = openssl("asn1parse", "-inform", "DER", "-in", str(f)).stdout
    assert re.match(r"\s*0:d=0\s+hl=\d+\s+l=\s*\d+\s+cons: SEQUENCE", txt), txt
    assert ("challengePassword" in txt) == challenge, txt
    assert ("rsaEncryption" in txt) == rsa, txt
    assert "ecdsa-with-SHA256" in txt and "prime256v1" in txt and "id-ecPublicKey" in txt
    assert ("secp384r1" in txt) == (label != "p256only/"), txt


# -- serverkeygen (RFC 7030 4.4) ---------------------------------------------

def parse_multipart(h, body):
    m = re.match(r"multipart/mixed; boundary=(\S+)$", h["content-type"])
    assert m, h
    parts = body.split(b"--" + m.group(1).encode())
    assert parts[0] == b"" and parts[-1].strip() == b"--", body[:300]
    parts = parts[1:-1]
    assert len(parts) == 2, body[:300]
    out = []
    for p in parts:
        head, _, content = p.strip(b"\r\n").partition(b"\r\n\r\n")
        out.append((head.decode(), content + b"\r\n"))
    return out


@pytest.mark.parametrize("key,expect", [("ec:P-256", "prime256v1"), ("ec:P-384", "secp384r1"),
                                        ("rsa:2048", "Private-Key: (2048 bit")])
@pytest.mark.parametrize("auth", ["basic", "cert"])
def test_serverkeygen(env, key, expect, auth):
    name = env.name("skg")
    kw = {"user": basic(env)} if auth == "basic" else {"cert": client(env)}
    st, h, body = curl(env, "serverkeygen", data=b64(make_csr(env, name, key=key)), **kw)
    assert st == 200, body
    (kh, kb), (ch, cb) = parse_multipart(h, body)
    assert "Content-Type: application/pkcs8" in kh, kh
    assert f"Content-Type: {PKCS7}" in ch, ch
    keyf = env.tmp / f"{name}.p8"
    keyf.write_bytes(b64_body(kb))
    ktxt = openssl("pkey", "-inform", "DER", "-in", str(keyf), "-noout", "-text").stdout
    assert expect in ktxt, ktxt
    pem = check_issued(env, cb, name + "-skg", name)
    # The key in the answer is the certificate's, not the CSR's.
    pub_key = openssl("pkey", "-inform", "DER", "-in", str(keyf), "-pubout").stdout
    assert pub_key == openssl("x509", "-in", str(pem), "-noout", "-pubkey").stdout
    assert pub_key != openssl("pkey", "-in", str(env.tmp / f"{name}.key"), "-pubout").stdout


def test_serverkeygen_needs_auth(env):
    with nothing_stored(env):
        st, h, body = curl(env, "serverkeygen", data=b64(make_csr(env, env.name("skgx"))))
    refused(env, st, 401, b"authentication required", h, body)


def test_serverkeygen_key_type_hint_not_allowed(env):
    """A CSR key type the template does not allow is a hint only: the
    template's keygen type is made (RFC 7030 4.4.1)."""
    name = env.name("skghint")
    st, h, body = curl(env, "p256only/serverkeygen",
                       data=b64(make_csr(env, name, key="ec:P-384")), user=basic(env))
    assert st == 200, body
    (_, kb), (_, cb) = parse_multipart(h, body)
    keyf = env.tmp / f"{name}.p8"
    keyf.write_bytes(b64_body(kb))
    assert "prime256v1" in openssl("pkey", "-inform", "DER", "-in", str(keyf), "-noout",
                                   "-text").stdout
    check_issued(env, cb, name + "-skg", name)


# -- simplereenroll (RFC 7030 4.2.2) -----------------------------------------

def reenroll_csr(env, cert, key, name, subj=None, extra=()):
    """A renewal CSR for cert: its key, its subject (or subj)."""
    der = env.tmp / f"{name}.csr.der"
    if subj is None:
        subj = "/" + cert_subject(cert).replace(",", "/")
    openssl("req", "-new", "-key", str(key), "-subj", subj, *extra, "-outform", "DER",
            "-out", str(der))
    return der.read_bytes()


def test_reenroll(env):
    cn = env.name("re")
    cert, key = device_cert(env, cn)
    st, _, body = curl(env, "simplereenroll", data=b64(reenroll_csr(env, cert, key, cn + "r")),
                       cert=(cert, key))
    assert st == 200, body
    renewed = check_issued(env, body, cn + "-renewed", cn)
    assert cert_serial(renewed) != cert_serial(cert)


def test_reenroll_identity_must_match_400(env):
    cn = env.name("re")
    cert, key = device_cert(env, cn)
    with nothing_stored(env):
        st, h, body = curl(env, "simplereenroll",
                           data=b64(reenroll_csr(env, cert, key, cn + "x", subj="/CN=other")),
                           cert=(cert, key))
    refused(env, st, 400, b"subject differs", h, body)
    with nothing_stored(env):
        st, h, body = curl(env, "simplereenroll",
                           data=b64(reenroll_csr(env, cert, key, cn + "y",
                                                 extra=["-addext", "subjectAltName=DNS:x.example"])),
                           cert=(cert, key))
    refused(env, st, 400, b"subjectAltName differs", h, body)


@pytest.mark.parametrize("how", ["basic-only", "none", "foreign-cert"])
def test_reenroll_needs_the_cert_403(env, how):
    kw = {"basic-only": {"user": f"{USER}:{PASSWORD}"}, "none": {},
          "foreign-cert": {"cert": foreign_client(env)}}[how]
    reason = b"client certificate" if how == "foreign-cert" else b"needs the TLS client certificate"
    with nothing_stored(env):
        st, h, body = curl(env, "simplereenroll",
                           data=b64(make_csr(env, env.name("re403"), subj="/CN=psn1")), **kw)
    refused(env, st, 403, reason, h, body)


def test_expired_client_cert_refused(env):
    """A certificate of the "short" template (10 s after the 5-minute
    backdate) is waited out: then reenrollment with it is 403, and
    enrollment with it (and nothing else) 401, both saying expired."""
    cn = env.name("short")
    cert, key = device_cert(env, cn, label="short/")
    assert validity_seconds(cert) == SHORT_VALIDITY
    na = openssl("x509", "-in", str(cert), "-noout", "-enddate").stdout.split("=", 1)[1].strip()
    left = time.mktime(time.strptime(na, "%b %d %H:%M:%S %Y %Z")) - time.mktime(time.gmtime())
    assert left <= SHORT_VALIDITY - 300 + 5, left
    time.sleep(max(0, left) + 2)
    p = openssl("verify", "-CAfile", str(env.root), "-untrusted", str(env.untrusted), str(cert),
                check=None)
    assert p.returncode != 0 and "expired" in p.stdout + p.stderr
    with nothing_stored(env):
        st, h, body = curl(env, "simplereenroll",
                           data=b64(reenroll_csr(env, cert, key, cn + "r")), cert=(cert, key))
        refused(env, st, 403, b"expired", h, body)
        st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, env.name("exp"))),
                           cert=(cert, key))
        refused(env, st, 401, b"expired", h, body)


def test_revoked_client_cert_refused(env):
    """Revoked on the PAN, the revocation reaches the PSN as an event:
    reenrollment with the certificate is 403 and enrollment 401, both
    saying revoked."""
    p = env.pan.cli("cert", "--help")
    if "cert revoke" not in p.stdout + p.stderr:
        pytest.skip("revocation does not exist yet: `pan cert revoke` is issue 5")
    cn = env.name("rev")
    cert, key = device_cert(env, cn)
    settled(env)   # the PAN knows the certificate
    env.pan.cli("cert", "revoke", cert_serial(cert), check=True)
    env.psn.wait_events(env.pan)
    with nothing_stored(env):
        st, h, body = curl(env, "simplereenroll",
                           data=b64(reenroll_csr(env, cert, key, cn + "r")), cert=(cert, key))
        refused(env, st, 403, b"revoked", h, body)
        st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, env.name("revd"))),
                           cert=(cert, key))
        refused(env, st, 401, b"revoked", h, body)
    # Basic credentials still work for the same client (RFC 7030 3.2.3).
    name = env.name("revbasic")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)), user=basic(env),
                       cert=(cert, key))
    assert st == 200, body
    check_issued(env, body, name, name)


# -- proof of possession (RFC 7030 3.5, RFC 5929, RFC 9266) ------------------

@pytest.mark.parametrize("tls,btype", [("1.2", "tls-unique"), ("1.3", "tls-exporter")])
@pytest.mark.parametrize("resume", [False, True], ids=["full", "resumed"])
@pytest.mark.parametrize("auth", ["basic", "cert"])
def test_pop_required(env, tls, btype, resume, auth):
    a = (["--user", USER, "--pass", PASSWORD] if auth == "basic"
         else ["--cert", str(env.client_cert), "--key", str(env.client_key)])
    r = ["--resume"] if resume else []
    cn = env.name("pop")
    out, text = pop(env, *a, *r, "--tls", tls, "--label", "strict", "--binding", "right",
                    "--cn", cn)
    assert out["binding"] == btype
    assert out["reused"] == ("1" if resume else "0")
    assert out["status"] == "200", text
    body = text.split("\n", 3)[3].encode().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    check_issued(env, body, cn, cn)
    with nothing_stored(env):
        out, text = pop(env, *a, *r, "--tls", tls, "--label", "strict", "--binding", "wrong")
        assert out["status"] == "400" and "proof of possession failed" in text, text
        out, text = pop(env, *a, *r, "--tls", tls, "--label", "strict", "--binding", "none")
        assert out["status"] == "400" and "proof of possession required" in text, text


def test_pop_optional_and_off(env):
    base = ["--user", USER, "--pass", PASSWORD]
    # The default template: optional (checked when present).
    assert pop(env, *base, "--binding", "none")[0]["status"] == "200"
    assert pop(env, *base, "--binding", "right")[0]["status"] == "200"
    with nothing_stored(env):
        out, text = pop(env, *base, "--binding", "wrong")
    assert out["status"] == "400" and "proof of possession failed" in text, text
    # Off: challengePassword is not looked at.
    assert pop(env, *base, "--label", "nopop", "--binding", "wrong")[0]["status"] == "200"


def test_pop_reenroll(env):
    a = ["--cert", str(env.client_cert), "--key", str(env.client_key), "--op",
         "simplereenroll", "--label", "strict"]
    for tls in ("1.2", "1.3"):
        assert pop(env, *a, "--tls", tls, "--binding", "right")[0]["status"] == "200"
        with nothing_stored(env):
            assert pop(env, *a, "--tls", tls, "--binding", "wrong")[0]["status"] == "400"


# -- slow and bad clients ----------------------------------------------------

def recv_until_closed(sock, deadline):
    """What the server sends until it closes the connection (or deadline)."""
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


def closed_by_peer(sock, deadline):
    sock.setblocking(False)
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.2)
        if r:
            try:
                if sock.recv(4096) == b"":
                    return True
            except ssl.SSLWantReadError:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                return True
    return False


def test_slowloris(env):
    """Idle and trickling clients are dropped after est.timeout (2 s) and
    never hold a worker: a normal enrollment is served meanwhile."""
    ctx = ssl.create_default_context(cafile=str(env.root))
    pid = env.est_pid()
    t0 = time.monotonic()
    idle = [socket.create_connection((env.ip, EST_PORT)) for _ in range(50)]
    # Handshake done, then the request head a byte at a time.
    slow = []
    for _ in range(10):
        s = ctx.wrap_socket(socket.create_connection((env.ip, EST_PORT)), server_hostname=HOST)
        s.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\n")
        slow.append(s)
    # A body that never finishes.
    body = ctx.wrap_socket(socket.create_connection((env.ip, EST_PORT)), server_hostname=HOST)
    body.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: psn1\r\n"
                 b"Content-Type: application/pkcs10\r\nContent-Length: 2000\r\n\r\nMII")
    # Meanwhile (more connections than workers are held) a normal request.
    name = env.name("meanwhile")
    st, _, out = curl(env, "simpleenroll", data=b64(make_csr(env, name)), cert=client(env))
    assert st == 200, out
    dropped = set()
    while time.monotonic() - t0 < EST_TIMEOUT + 6 and len(dropped) < len(slow):
        for i, s in enumerate(slow):
            if i in dropped:
                continue
            try:
                s.send(b"X")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                dropped.add(i)
                continue
            r, _, _ = select.select([s], [], [], 0)
            if r:
                try:
                    if s.recv(4096) == b"":
                        dropped.add(i)
                except (ConnectionResetError, ssl.SSLError, OSError):
                    dropped.add(i)
        time.sleep(0.25)
    elapsed = time.monotonic() - t0
    assert len(dropped) == len(slow), f"only {len(dropped)} of {len(slow)} trickling clients dropped"
    assert elapsed < EST_TIMEOUT + 6, elapsed
    deadline = time.monotonic() + EST_TIMEOUT + 5
    for s in idle + [body]:
        assert closed_by_peer(s, deadline), "an idle connection was not dropped"
        s.close()
    for s in slow:
        s.close()
    assert env.est_pid() == pid, "the EST server restarted"
    check_issued(env, out, name, name)


def bad_requests(env, count):
    """count bad requests in a row, quickly: junk and refused enrollments
    on fresh TLS connections, and bad CSRs on one keep-alive connection."""
    ctx = ssl.create_default_context(cafile=str(env.root))
    junk = [b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
            b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Length: 5\r\n\r\nxxxxx",
            b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
            b"GET /.well-known/est/../../etc/passwd HTTP/1.1\r\n\r\n"]
    n = count // 2
    for i in range(n):
        s = ctx.wrap_socket(socket.create_connection((env.ip, EST_PORT), timeout=30),
                            server_hostname=HOST)
        try:
            s.sendall(junk[i % len(junk)])
            s.recv(4096)
        except (ConnectionResetError, ssl.SSLError, OSError):
            pass
        s.close()
    cctx = ssl.create_default_context(cafile=str(env.root))
    cctx.load_cert_chain(str(env.client_cert), str(env.client_key))
    # The server's certificate names psn1, not the address we connect to.
    cctx.check_hostname = False
    conn = http.client.HTTPSConnection(env.ip, EST_PORT, context=cctx, timeout=30)
    statuses = set()
    for i in range(count - n):
        if i % 3 == 0:
            body, ctype = b"MIIBnotacsr" + str(i).encode(), "application/pkcs10"
        elif i % 3 == 1:
            body, ctype = b"x", "text/plain"
        else:
            body, ctype = b"", "application/pkcs10"
        conn.request("POST", "/.well-known/est/simpleenroll", body=body,
                     headers={"Content-Type": ctype})
        r = conn.getresponse()
        r.read()
        statuses.add(r.status)
    conn.close()
    assert statuses == {400, 415}, statuses


def test_bad_requests_then_good(env):
    pid = env.est_pid()
    t0 = time.monotonic()
    with nothing_stored(env):
        bad_requests(env, BAD_COUNT)
    took = time.monotonic() - t0
    name = env.name("after")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)), user=basic(env))
    assert st == 200, body
    check_issued(env, body, name, name)
    assert env.est_pid() == pid, "the EST server restarted"
    print(f"{BAD_COUNT} bad requests in {took:.1f} s")


# -- the chain-incomplete case (the product's troubleshooting step 1) --------

def test_chain_incomplete_503(env):
    """Last: it breaks the PSN's chain on disk and repairs it.  cacerts and
    enrollment answer 503 with the reason while it is incomplete;
    csrattrs still works; nothing is issued."""
    chain = env.psn.datadir / "ca/chain.pem"
    good = chain.read_text()
    node_ca, root = split_pem(good)
    cafile = env.tmp / "root+node.pem"
    cafile.write_text(root + node_ca)
    pid = env.est_pid()
    try:
        chain.write_text(root)     # the Node CA is gone
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: curl(env, "cacerts")[0] == 503, 30, "cacerts to answer 503",
                 detail=env.psn.log_text)
        st, h, body = curl(env, "cacerts")
        refused(env, st, 503, b"incomplete", h, body)
        assert b"Node CA - pan1" in body, body
        with nothing_stored(env):
            st, h, body = curl(env, "simpleenroll", data=b64(make_csr(env, env.name("inc"))),
                               user=basic(env))
            refused(env, st, 503, b"incomplete", h, body)
            st, h, body = curl(env, "serverkeygen", data=b64(make_csr(env, env.name("inc"))),
                               cert=client(env))
            refused(env, st, 503, b"incomplete", h, body)
        assert curl(env, "csrattrs")[0] == 200
        assert re.search(r"est: .*chain incomplete.*Node CA - pan1.*cacerts and enrollment "
                         r"answer 503", env.psn.log_text())
    finally:
        chain.write_text(good)
        os.kill(pid, signal.SIGHUP)
    wait_for(lambda: curl(env, "cacerts")[0] == 200, 30, "cacerts after the repair",
             detail=env.psn.log_text)
    name = env.name("repaired")
    st, _, body = curl(env, "simpleenroll", data=b64(make_csr(env, name)), user=basic(env))
    assert st == 200, body
    check_issued(env, body, name, name)


def test_clean_stop(env):
    """After everything above: the PSN stops cleanly on SIGTERM, no
    service of it died on the way, and (in sanitizer builds) no report."""
    env.psn.stop()
    log = env.psn.log_text()
    assert "terminated signal" not in log, log[-4000:]
    assert re.search(r"est exited \(pid \d+\)", log), log[-4000:]
    out = Path(env.psn.outpath).read_text(errors="replace")
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out[-4000:]
