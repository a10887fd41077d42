"""The PAN's OCSP responder for the upper levels (issue 5 item 4): `pan run`
answers on ocsp.listen (the PAN's own address, port 2560) for the
certificates its Node CA issued, signed by a delegated responder that the
Node CA issued.  Judged with openssl ocsp and curl: a joined PSN's
Endpoint Sub CA (AIA naming the PAN's responder) good, then revoked
(cessationOfOperation) by `pan node remove`; a whole chain (the PSN's EST
server certificate at the PSN's responder, its Sub CA at the PAN's); an
unknown serial; a foreign issuer (unauthorized); garbage
(malformedRequest); the legacy hierarchy's PSN responder certificate; a
PAN made before the responder existed (files made at run start); a killed
responder worker restarted; bad ocsp.listen and a port in use refused."""

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (PASSPHRASE, aia_ocsp, cert_text, clean_env, lab, openssl, run,  # noqa: F401,E402
                    wait_for, zlint_findings)

OCSP_PORT = 2560
MALFORMED = bytes.fromhex("30030a0101")


def url_of(node):
    return f"http://{node.address.ip}:{OCSP_PORT}/ocsp"


def ocsp(lab, issuer, url, *args, cafile, others=()):
    """openssl ocsp: (returncode, stdout + stderr)."""
    chain = lab.tmp / f"chain-{len(list(lab.tmp.iterdir()))}.pem"
    chain.write_text("".join(Path(o).read_text() for o in others))
    verify = ["-CAfile", str(cafile)]
    if others:
        verify += ["-verify_other", str(chain)]
    p = openssl("ocsp", "-issuer", str(issuer), "-url", url, "-timeout", "20",
                *verify, *args, check=None)
    return p.returncode, p.stdout + p.stderr


def status_of(out, name):
    m = re.search(rf"^{re.escape(str(name))}: (\w+)", out, re.M)
    return m.group(1) if m else None


def pan_files(pan):
    d = pan.datadir / "ca"
    return d / "root-ca.crt", d / "node-ca.crt", d / "ocsp-responder.crt"


def check_sub(lab, pan, sub):
    """The Sub CA at the PAN's responder, strictly verified: its status."""
    root, node, _ = pan_files(pan)
    rc, out = ocsp(lab, node, url_of(pan), "-cert", str(sub), cafile=root, others=[node])
    assert "Response verify OK" in out, out
    return status_of(out, sub), out


def joined(lab, hierarchy=None):
    pan = lab.pan(hierarchy=hierarchy)
    psn = lab.psn("psn1")
    psn.join(pan.node_add("psn1", "psn"), check=True)
    return pan, psn


def test_upper_levels(lab):
    pan, psn = joined(lab)
    root, node, responder = pan_files(pan)
    sub = psn.datadir / "ca/endpoint-sub-ca.crt"

    # The Sub CA names the PAN's responder; RFC 5280 lints stay clean.
    assert aia_ocsp(cert_text(sub)) == [url_of(pan)], cert_text(sub)
    findings = zlint_findings(sub)
    assert not findings, findings
    # The responder: issued by the Node CA, OCSP signing, no-check.
    text = cert_text(responder)
    assert "OCSP Signing" in text and "OCSP No Check" in text, text
    assert "Certificate Services OCSP Responder - pan1" in text
    assert openssl("verify", "-CAfile", str(root), "-untrusted", str(node),
                   str(responder)).returncode == 0

    st = pan.status().stdout
    m = re.search(r"^OCSP Responder\s+running\s+(\d+)", st, re.M)
    assert m, st
    assert f"OCSP responder:  {url_of(pan)}" in st, st

    s, out = check_sub(lab, pan, sub)
    assert s == "good", out

    # A whole chain: the endpoint at its PSN's responder, its Sub CA here.
    psn.start()
    leaf = psn.datadir / "ca/est-server.crt"
    wait_for(lambda: ocsp(lab, sub, url_of(psn), "-cert", str(leaf), cafile=root,
                          others=[sub, node])[0] == 0, 60,
             "the PSN's responder to answer", detail=psn.log_text)
    rc, out = ocsp(lab, sub, url_of(psn), "-cert", str(leaf), cafile=root, others=[sub, node])
    assert "Response verify OK" in out and status_of(out, leaf) == "good", out
    s, out = check_sub(lab, pan, sub)
    assert s == "good", out

    # Unknown serial of the Node CA; a certificate of another issuer (the
    # Node CA itself, the Root CA's): unauthorized.
    rc, out = ocsp(lab, node, url_of(pan), "-serial", "0x7fe1a2b3c4d5", cafile=root,
                   others=[node])
    assert "Response verify OK" in out and re.search(r"^0x7fe1a2b3c4d5: unknown", out, re.M), out
    rc, out = ocsp(lab, root, url_of(pan), "-cert", str(node), cafile=root)
    assert "unauthorized" in out, out

    # Garbage: malformedRequest, and the responder still answers.
    bad = lab.tmp / "garbage.der"
    bad.write_bytes(b"\x30\x82\xff\xffnot an OCSP request")
    body = lab.tmp / "garbage.resp"
    p = run(["curl", "-sS", "--max-time", "20", "-o", str(body), "-w", "%{http_code}",
             "-H", "Content-Type: application/ocsp-request", "--data-binary", f"@{bad}",
             url_of(pan)])
    assert p.returncode == 0 and p.stdout == "200", p.stderr
    assert body.read_bytes() == MALFORMED
    p = run(["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://{pan.address.ip}:{OCSP_PORT}/nothing"])
    assert p.stdout == "404", p.stdout

    # Removing the node revokes its certificates: the PAN's responder
    # says so at once, with the reason.
    psn.stop()
    pan.cli("node", "remove", "psn1", check=True)
    s, out = check_sub(lab, pan, sub)
    assert s == "revoked", out
    assert "cessationOfOperation" in out, out
    assert "OCSP Responder" in pan.status().stdout


def test_legacy_psn_responder(lab):
    """Legacy hierarchy: the Node CA issued the PSN's responder certificate
    too, so the PAN answers for it as well."""
    pan, psn = joined(lab, hierarchy="legacy")
    root, node, _ = pan_files(pan)
    resp = psn.datadir / "ca/ocsp-responder.crt"
    rc, out = ocsp(lab, node, url_of(pan), "-cert", str(resp), cafile=root, others=[node])
    assert "Response verify OK" in out and status_of(out, resp) == "good", out
    s, out = check_sub(lab, pan, psn.datadir / "ca/endpoint-sub-ca.crt")
    assert s == "good", out


def test_made_at_run_start(lab):
    """A PAN made before the responder existed: no files until `pan run`,
    which makes them (through the CA signer), encrypted, recorded."""
    pan = lab.pan(start=False)
    _, node, responder = pan_files(pan)
    key = pan.datadir / "ca/ocsp-responder.key"
    before = pan.cert_count()
    responder.unlink()
    key.unlink()
    assert "none yet" in pan.status().stdout
    pan.start()
    assert responder.exists() and key.exists()
    assert "ENCRYPTED" in key.read_text()
    assert openssl("pkey", "-in", str(key), "-passin", "pass:wrong passphrase", "-noout",
                   check=None).returncode != 0
    assert openssl("pkey", "-in", str(key), "-passin", f"pass:{PASSPHRASE}", "-noout",
                   check=None).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)
    assert pan.cert_count() == before + 1
    assert "ocsp-responder" in pan.cli("cert", "list", check=True).stdout
    root, _, _ = pan_files(pan)
    rc, out = ocsp(lab, node, url_of(pan), "-cert", str(responder), cafile=root, others=[node])
    assert "Response verify OK" in out and status_of(out, responder) == "good", out
    # Kept at the next start.
    serial = openssl("x509", "-in", str(responder), "-noout", "-serial").stdout
    pan.stop()
    pan.start()
    assert openssl("x509", "-in", str(responder), "-noout", "-serial").stdout == serial


def children(pid):
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_worker_restarted(lab):
    """A crash of the network-facing worker is an outage of the responder
    only: it comes back, the PAN keeps running."""
    pan = lab.pan()
    root, node, responder = pan_files(pan)
    m = re.search(r"^OCSP Responder\s+running\s+(\d+)", pan.status().stdout, re.M)
    sup = int(m.group(1))
    workers = children(sup)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)

    def back():
        w = children(sup)
        if not w or w == workers:
            return False
        rc, out = ocsp(lab, node, url_of(pan), "-cert", str(responder), cafile=root,
                       others=[node])
        return "Response verify OK" in out
    wait_for(back, 30, "the OCSP responder to be restarted", detail=pan.log_text)
    assert pan.running
    assert "restarting it in 1 s" in pan.log_text()


def test_bad_settings_refused(lab):
    pan = lab.pan(start=False)
    p = run([pan.exe, "run", "--data-dir", str(pan.datadir), "--passphrase-file", pan.passfile,
             "--listen", pan.address.endpoint(8671), "--events-listen",
             pan.address.endpoint(8672), "--set", "ocsp.listen=not-an-ip:2560"],
            env=clean_env(), timeout=60)
    assert p.returncode == 1 and "ocsp.listen must be an IP address" in p.stderr, p.stderr
    # The port taken: pan run fails with the reason and leaves nothing.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((pan.address.ip, OCSP_PORT))
    s.listen(1)
    try:
        pan.start(wait=False)
        rc = pan.proc.wait(60)
        out = pan.outpath.read_text()
        assert rc == 1 and "Address already in use" in out, out
        time.sleep(0.5)
        assert not pan.leftover_pids(), pan.leftover_pids()
    finally:
        s.close()
