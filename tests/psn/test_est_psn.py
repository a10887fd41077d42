"""The PSN's CA service and EST server on real executables (issue 4): a
joined PSN runs `psn service ca` and `psn service est` (and `psn service
all`, the supervisor), and curl and openssl judge what they answer:
cacerts, enrollment by client certificate and by Basic, the issued
certificate in the store and the outbox, the CA service down (503), an
incomplete chain (503), and the supervisor's restart and "EST follows CA"."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (PASSPHRASE, _group_pids, aia_ocsp, cert_issuer, cert_serial,  # noqa: E402
                    cert_subject, cert_text, clean_env, exe, ext_key_usage, lab,  # noqa: F401
                    openssl, run, split_pem, tail, verify, wait_for, zlint_findings)

EST_PORT = 8084
OCSP_URL = "http://psn1:2560/ocsp"
ROOT_CN = "CN=Certificate Services Root CA - pan1"
NODE_CA_CN = "CN=Certificate Services Node CA - pan1"
SUB_CA_CN = "CN=Certificate Services Endpoint Sub CA - psn1"
USER, PASSWORD = "estuser", "est-password-1"
START_TIMEOUT = 90.0


class Service:
    """`psn service ca|est|all` in the foreground, in its own session."""

    def __init__(self, lab, psn, which, *args):
        self.lab, self.psn, self.which = lab, psn, which
        self.outpath = lab.tmp / f"service-{which}-{time.monotonic_ns()}.out"
        out = open(self.outpath, "wb")
        argv = [exe("psn"), "service", which, "--data-dir", str(psn.datadir),
                "--passphrase-file", psn.passfile, *args]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=clean_env(),
                                     start_new_session=True)
        out.close()
        lab.children.append(self.proc)

    def output(self):
        return tail(self.outpath)

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"psn service {self.which} exited with {self.proc.returncode}:\n"
                                 f"{self.output()}\n{self.psn.diagnostics()}")

    def stop(self, sig=signal.SIGTERM, expect=0):
        self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        if expect is not None:
            assert rc == expect, f"psn service {self.which}: exit {rc}\n{self.output()}"
        wait_for(lambda: not _group_pids(self.proc.pid), 15,
                 f"the processes of psn service {self.which} to end")
        return rc


def unix_listening(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_listening(ip, port=EST_PORT):
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def start_ca(lab, psn):
    svc = Service(lab, psn, "ca")

    def up():
        svc.check_alive()
        return unix_listening(psn.datadir / "ca-service.sock")
    wait_for(up, START_TIMEOUT, "the CA service to listen", detail=svc.output)
    return svc


def start_est(lab, psn, addr, *extra):
    svc = Service(lab, psn, "est", "--set", f"est.listen={addr.ip}:{EST_PORT}",
                  "--set", "log.level=debug", *extra)

    def up():
        svc.check_alive()
        return tcp_listening(addr.ip)
    wait_for(up, START_TIMEOUT, "the EST server to listen", detail=svc.output)
    return svc


def joined_psn(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    psn = lab.psn("psn1")
    psn.join(js, check=True)
    return pan, psn


class Est:
    """curl against https://<psn>:8084/.well-known/est/ on addr."""

    def __init__(self, lab, psn, addr):
        self.lab, self.psn, self.addr = lab, psn, addr
        self.n = 0
        d = psn.datadir / "ca"
        self.root = d / "root-ca.crt"
        # The client trusts the deployment's root only.
        self.cafile = self.root

    def request(self, op, *args, data=None, cacert=None, label=None):
        self.n += 1
        body = self.lab.tmp / f"est-{self.n}.body"
        hdrs = self.lab.tmp / f"est-{self.n}.hdrs"
        path = f"/.well-known/est/{label + '/' if label else ''}{op}"
        argv = ["curl", "-sS", "--max-time", "30",
                "--resolve", f"{self.psn.hostname}:{EST_PORT}:{self.addr.ip}",
                "--cacert", str(cacert or self.cafile), "-o", str(body), "-D", str(hdrs),
                "-w", "%{http_code}", *args]
        if data is not None:
            src = self.lab.tmp / f"est-{self.n}.req"
            src.write_bytes(data)
            argv += ["-H", "Content-Type: application/pkcs10", "--data-binary", f"@{src}"]
        argv.append(f"https://{self.psn.hostname}:{EST_PORT}{path}")
        p = run(argv, timeout=60)
        assert p.returncode == 0, f"curl {path}: {p.stderr}"
        return int(p.stdout.strip()), hdrs.read_text(errors="replace"), body.read_bytes()


def pkcs7_certs(lab, b64, name):
    der = lab.tmp / f"{name}.p7.der"
    p = subprocess.run(["openssl", "base64", "-d", "-A"], input=re.sub(rb"\s", b"", b64),
                       capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout, p.stderr
    der.write_bytes(p.stdout)
    out = openssl("pkcs7", "-inform", "DER", "-in", str(der), "-print_certs").stdout
    return split_pem(out)


def make_csr(lab, cn, name, key="ec:P-256"):
    keyf, csr = lab.tmp / f"{name}.key", lab.tmp / f"{name}.csr.der"
    if key.startswith("ec:"):
        newkey = ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{key[3:]}"]
    else:
        newkey = ["-newkey", key]
    openssl("req", "-new", *newkey, "-nodes", "-keyout", str(keyf), "-subj", f"/CN={cn}",
            "-outform", "DER", "-out", str(csr))
    import base64
    return base64.encodebytes(csr.read_bytes())


def plain_client_key(lab, psn):
    out = lab.tmp / "est-client.plain.key"
    openssl("pkey", "-in", str(psn.datadir / "ca/est-client.key"), "-passin",
            "pass:" + PASSPHRASE, "-out", str(out))
    out.chmod(0o600)
    return out


def mdb_dump(psn, table):
    p = run(["mdb_dump", "-s", table, str(psn.datadir / "store")], timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def issued_cert(lab, est_body, name):
    certs = pkcs7_certs(lab, est_body, name)
    assert len(certs) == 1, f"simpleenroll returned {len(certs)} certificates"
    path = lab.tmp / f"{name}.pem"
    path.write_text(certs[0])
    return path


def check_issued(lab, psn, cert, cn, queued=True):
    """queued=False when `psn run` runs: its outbox may already have
    delivered (and dropped) the entry."""
    d = psn.datadir / "ca"
    untrusted = lab.tmp / "untrusted.pem"
    untrusted.write_text((d / "chain.pem").read_text() + (d / "endpoint-sub-ca.crt").read_text())
    assert cert_subject(cert) == f"CN={cn}"
    assert cert_issuer(cert) == SUB_CA_CN
    t = cert_text(cert)
    assert aia_ocsp(t) == [OCSP_URL], aia_ocsp(t)
    assert ext_key_usage(t) == (False, "TLS Web Client Authentication")
    p = verify(d / "root-ca.crt", cert, untrusted=untrusted, purpose="sslclient")
    assert p.returncode == 0, p.stdout + p.stderr
    findings = zlint_findings(cert)
    assert not findings, f"zlint {findings}"
    # In the PSN's store and queued for the PAN, under its serial.
    serial = cert_serial(cert).lstrip("0")
    assert serial in mdb_dump(psn, "certs").replace("\n", "").replace(" ", ""), \
        f"serial {serial} not in the store"
    if queued:
        assert serial in mdb_dump(psn, "outbox").replace("\n", "").replace(" ", ""), \
            f"serial {serial} not in the outbox"
    return serial


def test_est_on_psn(lab):
    pan, psn = joined_psn(lab)
    addr = lab.address()
    # Users are defined on the PAN and replicated: run the PSN until it
    # has applied them, then drive its services one by one.
    p = pan.user_add(USER, PASSWORD)
    assert USER in p.stdout
    # The password never shows in argv, and short ones are refused.
    pan.user_add("shorty", "short", check=False)
    p = pan.cli("user", "list", check=True)
    assert p.stdout.split() == [USER]
    psn.start()
    psn.wait_events(pan)
    psn.stop()

    ca = start_ca(lab, psn)
    sock = psn.datadir / "ca-service.sock"
    assert (sock.stat().st_mode & 0o777) == 0o600
    est = start_est(lab, psn, addr)
    e = Est(lab, psn, addr)

    # cacerts: no client authentication; Sub CA, Node CA, Root CA.
    status, hdrs, body = e.request("cacerts")
    assert status == 200, body
    assert re.search(r"(?im)^content-type: application/pkcs7-mime; smime-type=certs-only", hdrs)
    certs = pkcs7_certs(lab, body, "cacerts")
    subjects = []
    for i, c in enumerate(certs):
        f = lab.tmp / f"cacert{i}.pem"
        f.write_text(c)
        subjects.append(cert_subject(f))
    assert subjects == [SUB_CA_CN, NODE_CA_CN, ROOT_CN]

    # simpleenroll with the PSN's own EST client certificate.
    client_key = plain_client_key(lab, psn)
    client_cert = psn.datadir / "ca/est-client.crt"
    status, _, body = e.request("simpleenroll", "--cert", str(client_cert), "--key",
                                str(client_key), data=make_csr(lab, "device1", "dev1"))
    assert status == 200, body
    cert = issued_cert(lab, body, "dev1")
    serial = check_issued(lab, psn, cert, "device1")
    log = psn.log_text()
    assert re.search(rf"ca-service-cert.*issued tls-client certificate serial 0*{serial} "
                     r".*template EAP_Authentication_Certificate_Template "
                     r"for certificate CN=psn1", log), tail(psn.log_path)

    # Basic: none is 401 with a challenge; wrong is 401; right is 200.
    status, hdrs, body = e.request("simpleenroll", data=make_csr(lab, "device2", "dev2"))
    assert status == 401, body
    assert re.search(r'(?im)^www-authenticate: Basic realm="', hdrs), hdrs
    status, _, body = e.request("simpleenroll", "-u", f"{USER}:wrong-password",
                                data=make_csr(lab, "device2", "dev2"))
    assert status == 401, body
    status, _, body = e.request("simpleenroll", "-u", f"nobody:{PASSWORD}",
                                data=make_csr(lab, "device2", "dev2"))
    assert status == 401, body
    status, _, body = e.request("simpleenroll", "-u", f"{USER}:{PASSWORD}",
                                data=make_csr(lab, "device2", "dev2", key="rsa:2048"))
    assert status == 200, body
    check_issued(lab, psn, issued_cert(lab, body, "dev2"), "device2")
    assert re.search(r"issued tls-client certificate .* for basic estuser from ", psn.log_text())

    # serverkeygen: the key is made in the EST process.
    status, hdrs, body = e.request("serverkeygen", "-u", f"{USER}:{PASSWORD}",
                                   data=make_csr(lab, "device3", "dev3"))
    assert status == 200, body
    assert b"application/pkcs8" in body and b"smime-type=certs-only" in body

    # An unknown label is 404; a label "default" is the built-in template.
    status, _, _ = e.request("cacerts", label="nosuchlabel")
    assert status == 404
    status, _, _ = e.request("cacerts", label="default")
    assert status == 200

    # The CA service down: enrollment is 503 with the reason, at once.
    ca.proc.send_signal(signal.SIGKILL)
    ca.proc.wait(10)
    t0 = time.monotonic()
    status, _, body = e.request("simpleenroll", "-u", f"{USER}:{PASSWORD}",
                                data=make_csr(lab, "device4", "dev4"))
    assert status == 503, body
    assert b"CA service is not available" in body and b"not running" in body, body
    assert time.monotonic() - t0 < 5
    # And it comes back by itself when the CA service does.
    ca = start_ca(lab, psn)
    status, _, body = e.request("simpleenroll", "-u", f"{USER}:{PASSWORD}",
                                data=make_csr(lab, "device4", "dev4"))
    assert status == 200, body

    est.stop()
    ca.stop()
    assert not sock.exists(), "the CA service left its socket file"
    # No key of the sub CA in the EST server's process ever: its log says
    # which key the CA service holds, and only the CA service does.
    assert "holding the Endpoint Sub CA key" in psn.log_text()


def test_est_incomplete_chain(lab):
    pan, psn = joined_psn(lab)
    addr = lab.address()
    start_ca(lab, psn)
    chain = psn.datadir / "ca/chain.pem"
    node_ca, root = split_pem(chain.read_text())
    # A client that knows the Node CA can still make the TLS connection.
    cafile = lab.tmp / "root+node.pem"
    cafile.write_text(root + node_ca)
    chain.write_text(root)      # the Node CA is gone
    est = start_est(lab, psn, addr)
    e = Est(lab, psn, addr)
    status, _, body = e.request("cacerts", cacert=cafile)
    assert status == 503, body
    assert b"incomplete" in body and b"Node CA - pan1" in body, body
    status, _, body = e.request("simpleenroll", "--cert", str(psn.datadir / "ca/est-client.crt"),
                                "--key", str(plain_client_key(lab, psn)), cacert=cafile,
                                data=make_csr(lab, "device9", "dev9"))
    assert status == 503, body
    assert re.search(r"est: .*chain incomplete.*Node CA - pan1.*cacerts and enrollment answer 503",
                     psn.log_text())
    # Repaired on disk: a SIGHUP (or the next refresh) publishes it again.
    chain.write_text(node_ca + root)
    est.proc.send_signal(signal.SIGHUP)

    def ok():
        # Until the signal is handled the server still presents its old
        # TLS chain (without the Node CA), which a client trusting only
        # the root refuses: not yet, rather than a failure.
        try:
            return e.request("cacerts")[0] == 200
        except AssertionError:
            return False
    wait_for(ok, 30, "cacerts to work after the chain is repaired")
    chain.unlink()
    est.stop()
    est = start_est(lab, psn, addr)
    status, _, body = e.request("cacerts", cacert=cafile)
    assert status == 503, body
    assert b"chain.pem" in body, body


def comm_pids(svc, name):
    out = []
    for pid in _group_pids(svc.proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                out.append(pid)
        except OSError:
            pass
    return out


def test_supervisor_restarts_and_est_follows_ca(lab):
    pan, psn = joined_psn(lab)
    addr = lab.address()
    sup = Service(lab, psn, "all", "--set", f"est.listen={addr.ip}:{EST_PORT}",
                  "--set", f"ocsp.listen={addr.ip}:2560")

    def up():
        sup.check_alive()
        return tcp_listening(addr.ip) and comm_pids(sup, "ca-service") and comm_pids(sup, "est")
    wait_for(up, START_TIMEOUT, "the supervised services to run", detail=sup.output)
    e = Est(lab, psn, addr)
    assert e.request("cacerts")[0] == 200
    ca_pid = comm_pids(sup, "ca-service")[0]
    est_pid = comm_pids(sup, "est")[0]

    # The CA service crashes: logged, EST stopped (8084 closed), both back.
    os.kill(ca_pid, signal.SIGKILL)
    wait_for(lambda: "ca-service terminated signal 9" in psn.log_text(), 10,
             "the supervisor to log the crash", detail=lambda: tail(psn.log_path))
    wait_for(lambda: "EST follows CA" in psn.log_text(), 10, "EST to be stopped",
             detail=lambda: tail(psn.log_path))
    assert re.search(r"ca-service will be restarted in 1 s", psn.log_text())

    def back():
        sup.check_alive()
        c, s = comm_pids(sup, "ca-service"), comm_pids(sup, "est")
        return c and s and c[0] != ca_pid and s[0] != est_pid and tcp_listening(addr.ip)
    wait_for(back, 60, "the CA and EST services to come back", detail=lambda: tail(psn.log_path))
    wait_for(lambda: e.request("cacerts")[0] == 200, 30, "cacerts after the restart")

    # Crashes in a row back off: 1 s, then 2 s.
    ca_pid, est_pid = comm_pids(sup, "ca-service")[0], comm_pids(sup, "est")[0]
    os.kill(ca_pid, signal.SIGKILL)
    wait_for(lambda: "ca-service will be restarted in 2 s" in psn.log_text(), 15,
             "the second restart to back off", detail=lambda: tail(psn.log_path))
    wait_for(back, 60, "the CA and EST services to come back again",
             detail=lambda: tail(psn.log_path))

    # The EST server alone crashes: restarted, the CA service untouched.
    ca_now = comm_pids(sup, "ca-service")
    os.kill(comm_pids(sup, "est")[0], signal.SIGKILL)
    wait_for(lambda: "est terminated signal 9" in psn.log_text(), 10, "the EST crash logged")
    wait_for(lambda: comm_pids(sup, "est") and tcp_listening(addr.ip), 60, "EST back again")
    assert comm_pids(sup, "ca-service") == ca_now

    sup.stop()
    assert not tcp_listening(addr.ip)


def test_psn_run_serves_est_and_reports_to_pan(lab):
    """The daemon itself (not `psn service`): with session services on,
    `psn run` starts the CA service and the EST server on the PSN's own
    address; an enrolled certificate reaches the PAN through the outbox."""
    pan, psn = joined_psn(lab)
    psn.start()
    wait_for(lambda: tcp_listening(psn.address.ip), START_TIMEOUT, "psn run to serve EST on 8084",
             detail=psn.log_text)
    st = psn.status().stdout
    assert re.search(r"^Certificate Authority Service\s+running\s+\d+", st, re.M), st
    assert re.search(r"^EST Service\s+running\s+\d+", st, re.M), st
    est = Est(lab, psn, psn.address)
    code, hdrs, body = est.request("cacerts")
    assert code == 200, body
    assert len(pkcs7_certs(lab, body, "run-cacerts")) == 3
    key = plain_client_key(lab, psn)
    code, _, body = est.request("simpleenroll", "--cert", str(psn.datadir / "ca/est-client.crt"),
                                "--key", str(key), data=make_csr(lab, "device-run", "device-run"))
    assert code == 200, body
    cert = issued_cert(lab, body, "device-run")
    check_issued(lab, psn, cert, "device-run", queued=False)
    serial = cert_serial(cert)
    wait_for(lambda: serial in pan.cli("cert", "list", "--node", "psn1", check=True).stdout.lower(),
             30, "the enrolled certificate to reach the PAN", detail=psn.log_text)
    psn.stop()
    assert not tcp_listening(psn.address.ip)


def test_psn_run_session_services_off(lab):
    """Session services off: CA, EST and provisioning are disabled, 8084
    stays closed; the OCSP responder runs (every PSN answers OCSP)."""
    pan = lab.pan()
    js = pan.node_add("psn1", "psn", session="off")
    psn = lab.psn("psn1")
    psn.join(js, check=True)
    psn.start()
    pan.wait_state("psn1", "connected", timeout=30)
    st = psn.status().stdout
    assert re.search(r"^Certificate Authority Service\s+disabled", st, re.M), st
    assert re.search(r"^EST Service\s+disabled", st, re.M), st
    assert re.search(r"^Provisioning Service\s+disabled", st, re.M), st
    assert re.search(r"^OCSP Responder\s+running\s+\d+", st, re.M), st
    assert not tcp_listening(psn.address.ip)
    assert tcp_listening(psn.address.ip, 2560)
    assert "session services are off" in psn.log_text()
    # Disabled is not down: no service alarm on the PAN.
    time.sleep(4)
    assert "Service Down" not in pan.alarms()
