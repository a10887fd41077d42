"""psn join and psn run on real executables (issue 3): the PSN's certificates
in both OCSP hierarchies judged by openssl and zlint, its keys, heartbeats,
and every refusal of a join, each leaving the PAN and the PSN unchanged."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (BUILD, HEARTBEAT_TIMEOUT, LINK_TIMEOUT, PASSPHRASE, aia_ocsp,  # noqa: E402
                    basic_constraints, cert_issuer, cert_serial, parse_table, cert_subject, cert_text, ext_key_usage,
                    files_below, has_ocsp_nocheck, key_usage, lab, openssl,  # noqa: F401
                    private_key_secrets, split_pem, subject_alt_names, verify, wait_for,
                    zlint_findings)

ROOT_CN = "CN=Certificate Services Root CA - pan1"
NODE_CA_CN = "CN=Certificate Services Node CA - pan1"
SUB_CA_CN = "CN=Certificate Services Endpoint Sub CA - psn1"
RESPONDER_CN = "CN=Certificate Services OCSP Responder - psn1"
OCSP_URL = "http://psn1:2560/ocsp"
PSN_KEYS = ["ca/endpoint-sub-ca.key", "ca/ocsp-responder.key", "ca/est-server.key",
            "ca/est-client.key", "curve.key"]
# PEM private keys the PAN may hold: its own.
PAN_OWN_KEYS = {"ca/root-ca.key", "ca/node-ca.key", "ca/ocsp-responder.key", "curve.key"}


def joined_psn(lab, hierarchy="rfc6960", session=None):
    pan = lab.pan(hierarchy=hierarchy)
    js = pan.node_add("psn1", "psn", session=session)
    psn = lab.psn("psn1")
    psn.join(js, check=True)
    return pan, psn


def check_ca_dir_matches_pan(pan, psn):
    """The PSN's root and chain are the PAN's own certificates."""
    assert (psn.datadir / "ca/root-ca.crt").read_text() == (pan.datadir / "ca/root-ca.crt").read_text()
    chain = split_pem((psn.datadir / "ca/chain.pem").read_text())
    assert len(chain) == 2, "chain.pem must hold the Node CA and the Root CA"
    assert chain[0].strip() == (pan.datadir / "ca/node-ca.crt").read_text().strip()
    assert chain[1].strip() == (pan.datadir / "ca/root-ca.crt").read_text().strip()


@pytest.mark.parametrize("hierarchy", ["rfc6960", "legacy"])
def test_psn_join_hierarchy(lab, hierarchy):
    pan, psn = joined_psn(lab, hierarchy)
    d = psn.datadir
    for f in ["ca/endpoint-sub-ca.crt", "ca/ocsp-responder.crt", "ca/est-server.crt",
              "ca/est-client.crt", "ca/chain.pem", "ca/root-ca.crt", "curve.pub",
              "deployment.conf", "node.conf", *PSN_KEYS]:
        assert (d / f).is_file(), f"{f} missing after join"
    check_ca_dir_matches_pan(pan, psn)
    root = d / "ca/root-ca.crt"
    chain = d / "ca/chain.pem"
    sub = d / "ca/endpoint-sub-ca.crt"
    # Chain with the sub CA, for what the sub CA issues.
    full = psn.lab.tmp / "chain+sub.pem"
    full.write_text(chain.read_text() + sub.read_text())

    # Endpoint Sub CA: by the PAN's Node CA, a CA that signs only end entities.
    t = cert_text(sub)
    assert cert_subject(sub) == SUB_CA_CN
    assert cert_issuer(sub) == NODE_CA_CN
    assert basic_constraints(t) == (True, "CA:TRUE, pathlen:0")
    crit, ku = key_usage(t)
    assert crit and "Certificate Sign" in ku and "CRL Sign" in ku
    assert ext_key_usage(t) is None
    p = verify(root, sub, untrusted=chain)
    assert p.returncode == 0, p.stdout + p.stderr

    # OCSP responder: by the sub CA (rfc6960) or by the Node CA (legacy).
    resp = d / "ca/ocsp-responder.crt"
    t = cert_text(resp)
    assert cert_subject(resp) == RESPONDER_CN
    assert cert_issuer(resp) == (SUB_CA_CN if hierarchy == "rfc6960" else NODE_CA_CN)
    assert basic_constraints(t) == (True, "CA:FALSE")
    assert key_usage(t) == (True, "Digital Signature")
    assert ext_key_usage(t) == (False, "OCSP Signing")
    assert has_ocsp_nocheck(t), "OCSP responder without id-pkix-ocsp-nocheck"
    p = verify(root, resp, untrusted=full if hierarchy == "rfc6960" else chain)
    assert p.returncode == 0, p.stdout + p.stderr
    if hierarchy == "legacy":
        # Not issued by the sub CA: the sub CA path must not verify it.
        assert "Endpoint Sub CA" not in cert_issuer(resp)

    # EST server and client certificates: by the sub CA, made on the PSN.
    srv, cli = d / "ca/est-server.crt", d / "ca/est-client.crt"
    for cert, eku, purpose in [(srv, "TLS Web Server Authentication", "sslserver"),
                               (cli, "TLS Web Client Authentication", "sslclient")]:
        t = cert_text(cert)
        assert cert_issuer(cert) == SUB_CA_CN, cert
        assert cert_subject(cert) == "CN=psn1", cert
        assert basic_constraints(t) == (True, "CA:FALSE"), cert
        crit, ku = key_usage(t)
        assert crit and "Digital Signature" in ku and "Certificate Sign" not in ku, cert
        assert ext_key_usage(t) == (False, eku), cert
        assert aia_ocsp(t) == [OCSP_URL], f"{cert}: AIA {aia_ocsp(t)}"
        p = verify(root, cert, untrusted=full, purpose=purpose)
        assert p.returncode == 0, p.stdout + p.stderr
    assert "DNS:psn1" in subject_alt_names(cert_text(srv))

    # Every certificate passes zlint's RFC lints (when zlint is installed).
    for cert in [sub, resp, srv, cli]:
        findings = zlint_findings(cert)
        assert not findings, f"{cert.name}: zlint {findings}"

    # The PAN issued the sub CA (and the legacy responder): it knows them.
    certs = pan.ca_certs()
    assert "Certificate Services Endpoint Sub CA - psn1" in certs
    if hierarchy == "legacy":
        assert "Certificate Services OCSP Responder - psn1" in certs


def test_psn_private_keys_stay_on_the_psn(lab):
    pan, psn = joined_psn(lab)
    secrets = {}
    for k in PSN_KEYS:
        p = psn.datadir / k
        assert (p.stat().st_mode & 0o777) == 0o600, f"{k} mode {p.stat().st_mode & 0o777:o}"
        assert p.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), k
        bad = openssl("pkey", "-in", str(p), "-passin", "pass:wrong-passphrase", "-noout",
                      check=None)
        assert bad.returncode != 0, f"{k} opens without the passphrase"
        secrets[k] = private_key_secrets(p, PASSPHRASE)
    assert (psn.datadir.stat().st_mode & 0o777) == 0o700
    # The PAN's whole data directory, its LMDB file and logs included,
    # holds no copy of any PSN key, and no private key but its own.
    pan.stop()
    pan_files = files_below(pan.datadir)
    assert any(f.name == "data.mdb" for f in pan_files), "PAN store not found"
    for f in pan_files:
        rel = str(f.relative_to(pan.datadir))
        body = f.read_bytes()
        for k, values in secrets.items():
            for v in values:
                assert v not in body, f"PAN file {rel} holds the PSN's {k}"
        if rel not in PAN_OWN_KEYS:
            assert b"PRIVATE KEY" not in body, f"PAN file {rel} holds a private key"


def test_psn_run_heartbeats_and_status(lab):
    pan, psn = joined_psn(lab)
    assert pan.node_state("psn1") == "registered"
    psn.start()
    pan.wait_state("psn1", "connected")
    st = psn.status().stdout
    assert re.search(r"PROCESS NAME\s+STATE\s+PROCESS ID", st), st
    assert "psn1" in st
    wait_for(lambda: re.search(r"PAN link:\s+connected", psn.status().stdout), LINK_TIMEOUT,
             "psn1 to report its PAN link connected", detail=lambda: psn.status().stdout)
    # It stays connected over several heartbeat timeouts.
    time.sleep(HEARTBEAT_TIMEOUT + 1)
    assert pan.node_state("psn1") == "connected"
    psn.stop()
    pan.stop()


# -- refusals: each leaves the PAN and the joining PSN as they were ----------

def refused(lab, pan, js, pattern, hostname="psn1", role="psn", timeout="60s"):
    before = pan.snapshot()
    node = (lab.psn if role == "psn" else lab.san)(hostname, datadir=lab.tmp / f"refused-{len(lab.nodes)}")
    p = node.join(js, check=None, timeout=timeout)
    assert p.returncode > 0, f"join exited {p.returncode}:\n{p.stdout}{p.stderr}"
    assert re.search(pattern, p.stderr, re.I), f"unclear refusal (want /{pattern}/):\n{p.stderr}"
    assert not node.joined, "node.conf written by a refused join"
    assert pan.snapshot() == before, "the refused join changed the PAN"
    assert pan.running, "the PAN died"
    return p


def test_refused_wrong_secret(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    bad = js.replace(secret=("0" if js.secret[0] != "0" else "1") + js.secret[1:])
    refused(lab, pan, bad, r"token")
    # Nothing was recorded: the right secret still works, once.
    lab.psn("psn1").join(js, check=True)


def test_refused_unknown_token(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    bad = js.replace(token_id="%016x" % (int(js.token_id, 16) ^ 0xFFFF))
    refused(lab, pan, bad, r"token")


def test_refused_expired_token(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn", ttl="1s")
    time.sleep(2)
    refused(lab, pan, js, r"expired")


def test_refused_used_token(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    lab.psn("psn1").join(js, check=True)
    refused(lab, pan, js, r"used")


def test_refused_token_for_other_role(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "san")
    refused(lab, pan, js, r"role|\bsan\b")


def test_refused_other_hostname(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    refused(lab, pan, js, r"psn2|psn1|host", hostname="psn2")
    # The token is still good for its own host.
    lab.psn("psn1").join(js, check=True)


def test_refused_man_in_the_middle(lab):
    pan = lab.pan()
    other = lab.pan("pan2", start=False)
    js = pan.node_add("psn1", "psn")
    mitm = js.replace(pan_key=other.curve_public_hex)
    assert mitm.pan_key != js.pan_key
    log_before = pan.log_text()
    t0 = time.monotonic()
    p = refused(lab, pan, mitm, r"man in the middle")
    assert time.monotonic() - t0 < 20
    assert f"{pan.address.ip}" in p.stderr, "the refusal should name the server"
    # The token never reached the PAN: no join attempt in its log, and the
    # token is still unused.
    new = pan.log_text()[len(log_before):]
    assert js.token_id not in new, new
    assert not re.search(r"join", new, re.I), f"PAN logged a join attempt:\n{new}"
    lab.psn("psn1").join(js, check=True)


def test_refused_pan_unreachable(lab):
    pan = lab.pan()
    js = pan.node_add("psn1", "psn")
    pan.stop()   # the address is still ours, and nothing listens there
    node = lab.psn("psn1")
    t0 = time.monotonic()
    p = node.join(js, check=None, timeout="3s", proc_timeout=60)
    took = time.monotonic() - t0
    assert p.returncode > 0, p.stdout + p.stderr
    assert 2.5 <= took <= 15, f"join gave up after {took:.1f}s for --timeout 3s"
    assert pan.address.ip in p.stderr, p.stderr
    assert re.search(r"cannot reach|unreachable|timed? ?out|gave up|giving up|no answer",
                     p.stderr, re.I), p.stderr
    assert not node.joined
    # Nothing changed on the PAN either: the token is still good.
    pan.start()
    node.join(js, check=True)


def test_join_usage_errors(lab):
    pan = lab.pan(start=False)
    node = lab.psn("psn1")
    p = node.join("not-a-join-string", check=None)
    assert p.returncode > 0 and "join" in p.stderr.lower(), p.stderr
    assert not node.joined
    fake = f"iselab1.{'0' * 16}.{'1' * 64}.{pan.curve_public_hex}@{pan.address.ip}:8671"
    p = node.join(fake, hostname="psn_1", check=None)
    assert p.returncode > 0 and "psn_1" in p.stderr, p.stderr
    assert not node.joined


def test_psn_run_refuses_second_instance(lab):
    pan, psn = joined_psn(lab)
    psn.start()
    pan.wait_state("psn1", "connected")
    second = psn.cli("run", "--passphrase-file", psn.passfile, timeout=30)
    assert second.returncode > 0 and "already running" in second.stderr, second.stderr
    assert psn.running
    wait_for(lambda: pan.node_state("psn1") == "connected", LINK_TIMEOUT, "psn1 still connected")


# -- the outbox: certificates the PSN issued reach the PAN, once -------------

LOCAL_CERTS = ["ocsp-responder.crt", "est-server.crt", "est-client.crt"]
OUTBOX_TIMEOUT = LINK_TIMEOUT + 15


def cert_rows(pan, *args):
    """`pan cert list ARGS`: {serial: fields}, failing on a serial listed twice."""
    p = pan.cli("cert", "list", *args, check=True)
    rows = {}
    for fields, line in parse_table(p.stdout, "SERIAL"):
        if line.startswith("more:"):
            continue
        assert fields[0] not in rows, f"{fields[0]} listed twice:\n{p.stdout}"
        rows[fields[0]] = fields
    return rows


def local_serials(psn):
    return {cert_serial(psn.datadir / "ca" / f).lstrip("0"): f for f in LOCAL_CERTS}


def wait_delivered(pan, psn):
    want = local_serials(psn)

    def arrived():
        return {s.lstrip("0") for s in cert_rows(pan, "--node", psn.hostname)} == set(want)

    wait_for(arrived, OUTBOX_TIMEOUT, f"{psn.hostname}'s certificates to reach the PAN",
             detail=lambda: pan.cli("cert", "list").stdout + psn.status(check=False).stdout
             + "\n" + psn.diagnostics() + pan.diagnostics())


def outbox_waiting(psn):
    m = re.search(r"Outbox:\s+(\d+) certificates? waiting", psn.status().stdout)
    assert m, psn.status().stdout
    return int(m.group(1))


def test_outbox_delivers_local_certs(lab):
    pan, psn = joined_psn(lab)
    # Before `psn run` the PAN names the responder without details.
    assert "pending delivery from psn1" in pan.ca_certs()
    count = pan.cert_count()
    psn.start()
    wait_delivered(pan, psn)
    text = pan.ca_certs()
    responder = cert_serial(psn.datadir / "ca/ocsp-responder.crt").lstrip("0")
    block = text[text.index("OCSP Responder - psn1"):]
    block = "\n".join(block.splitlines()[:2])
    assert responder in block.lower().replace(":", ""), text
    assert re.search(r"p-?256|prime256v1|secp256r1", block, re.I), block
    assert re.search(r"\d{4}-\d{2}-\d{2}", block), block
    assert "pending delivery" not in text, text
    # The three local certificates, each exactly once, with their profile.
    rows = cert_rows(pan, "--node", "psn1")
    assert len(rows) == 3, rows
    assert any("ocsp-responder" in " ".join(f) for f in rows.values()), rows
    assert any("tls-server" in " ".join(f) for f in rows.values()), rows
    assert any("tls-client" in " ".join(f) for f in rows.values()), rows
    assert all(f[-1] == "good" for f in rows.values()), rows
    if count is not None:
        assert pan.cert_count() == count + 3
    wait_for(lambda: outbox_waiting(psn) == 0, OUTBOX_TIMEOUT, "psn1's outbox to empty",
             detail=lambda: psn.status().stdout)
    # pan cert show: the details and the PEM of what the PSN holds.
    p = pan.cli("cert", "show", responder, check=True)
    assert "Issuer node:   psn1" in p.stdout, p.stdout
    assert "Profile:       ocsp-responder" in p.stdout, p.stdout
    pem = split_pem(p.stdout)
    assert pem and pem[0].strip() == (psn.datadir / "ca/ocsp-responder.crt").read_text().strip()
    psn.stop()
    pan.stop()


def test_outbox_waits_for_the_pan_and_stores_once(lab):
    pan, psn = joined_psn(lab)
    # The PAN is down before the PSN's first run: the outbox waits.
    pan.stop()
    psn.start()
    time.sleep(2)
    assert outbox_waiting(psn) == 3
    pan.start()
    wait_delivered(pan, psn)
    wait_for(lambda: outbox_waiting(psn) == 0, OUTBOX_TIMEOUT, "psn1's outbox to empty",
             detail=lambda: psn.status().stdout)
    count = pan.cert_count()
    # Restarts on both sides re-deliver nothing and duplicate nothing.
    for _ in range(2):
        psn.stop()
        psn.start()
        pan.wait_state("psn1", "connected")
    pan.kill()
    pan.start()
    pan.wait_state("psn1", "connected")
    rows = cert_rows(pan, "--node", "psn1")
    assert len(rows) == 3, rows
    assert pan.cert_count() == count
    psn.stop()
    pan.stop()


def outbox_send(psn, *certs, check=True):
    tool = BUILD / "tests" / "tools" / "outbox_send"
    p = subprocess.run([str(tool), "--data-dir", str(psn.datadir), "--passphrase-file",
                        psn.passfile, *map(str, certs)], capture_output=True, text=True,
                       timeout=60)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_outbox_redelivery_and_forgery(lab):
    pan, psn = joined_psn(lab)
    psn2 = lab.psn("psn2")
    psn2.join(pan.node_add("psn2", "psn"), check=True)
    psn.start()
    wait_delivered(pan, psn)
    psn.stop()
    count = pan.cert_count()
    d = psn.datadir / "ca"
    # The same batch again (twice, and one certificate twice in it): all
    # acked, nothing stored twice.
    for _ in range(2):
        p = outbox_send(psn, d / "est-client.crt", d / "est-server.crt", d / "est-client.crt")
        assert p.stdout.split("\n")[:3] == ["item 0 acked", "item 1 acked", "item 2 acked"], p.stdout
    assert len(cert_rows(pan, "--node", "psn1")) == 3
    assert pan.cert_count() == count

    # A forger with a CA of the same name as psn1's Endpoint Sub CA.
    _, [leaf] = forged_leaves(lab, 1, "forger", "424242424242")
    assert cert_issuer(leaf) == SUB_CA_CN
    # Forged, then psn2's certificate under psn1's key, then a genuine one.
    other = psn2.datadir / "ca/est-client.crt"
    p = outbox_send(psn, leaf, other, d / "est-client.crt")
    lines = p.stdout.split("\n")
    # Refused for good, with the reason, so that the PSN sets them aside.
    assert lines[0].startswith("item 0 refused: not issued by a CA certificate of psn1"), p.stdout
    assert lines[1].startswith("item 1 refused: not issued by a CA certificate of psn1"), p.stdout
    assert lines[2] == "item 2 acked", p.stdout
    rows = cert_rows(pan)
    assert not any(s.startswith("424242424242") for s in rows), rows
    assert cert_serial(other).lstrip("0") not in {s.lstrip("0") for s in rows}
    assert pan.cert_count() == count
    assert re.search(r"outbox of psn1: item 0 refused: not issued by a CA certificate of psn1",
                     pan.log_text()), pan.log_text()[-3000:]
    assert pan.running
    pan.stop()


def forged_leaves(lab, n, name, serial_prefix):
    """n leaves of a CA that has the name of psn1's Endpoint Sub CA but not
    its key: what the PAN must refuse as psn1's.  Serials: serial_prefix
    (hex) then 4 hex digits.  (CA, [leaf, ...])"""
    fk, fca = lab.tmp / f"{name}-ca.key", lab.tmp / f"{name}-ca.crt"
    key, csr = lab.tmp / f"{name}.key", lab.tmp / f"{name}.csr"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(fk), "-out", str(fca), "-days", "30", "-subj", "/" + SUB_CA_CN,
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=forged-endpoint")
    leaves = []
    for i in range(n):
        leaf = lab.tmp / f"{name}-{i}.crt"
        openssl("x509", "-req", "-in", str(csr), "-CA", str(fca), "-CAkey", str(fk),
                "-set_serial", f"0x{serial_prefix}{i:04x}", "-days", "30", "-out", str(leaf))
        leaves.append(leaf)
    return fca, leaves


def queue_in_outbox(psn, issuer, certs, issued_at_ms):
    p = subprocess.run([str(BUILD / "tests" / "tools" / "outbox_send"), "--data-dir",
                        str(psn.datadir), "--passphrase-file", psn.passfile, "--queue", str(issuer),
                        "--issued-at-ms", str(issued_at_ms), *map(str, certs)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"queued {len(certs)}", p.stdout + p.stderr


def test_outbox_refused_items_do_not_block_the_queue(lab):
    """More certificates than one batch holds that the PAN refuses for good
    (a forger's CA signed them; queued as if psn1 had issued them) at the
    head of a PSN's outbox: the PSN sets them aside with the PAN's reason
    and goes on to the next batch, and the outbox drains instead of sending
    the same refused batch forever.  (A genuine certificate in the same
    batch as refused ones is stored and acked: the forgery test.)"""
    pan, psn = joined_psn(lab)
    psn.start()
    wait_delivered(pan, psn)
    psn.stop()
    count = pan.cert_count()
    n = 65  # OUTBOX_BATCH_MAX + 1: the whole first batch is refused
    fca, leaves = forged_leaves(lab, n, "forged-head", "5151")
    queue_in_outbox(psn, fca, leaves, 1000)
    psn.start()
    wait_for(lambda: outbox_waiting(psn) == 0, OUTBOX_TIMEOUT, "the outbox to drain",
             detail=lambda: psn.status(check=False).stdout + psn.diagnostics())
    assert f"Outbox refused:  {n} certificates the PAN refused" in psn.status().stdout, \
        psn.status().stdout
    rows = cert_rows(pan)
    assert not any(s.startswith("5151") for s in rows), rows
    assert pan.cert_count() == count
    assert "refuses a certificate for good (not issued by a CA certificate of psn1" in \
        psn.log_text(), psn.log_text()[-3000:]
    # After a restart nothing is sent again: the set-aside ones stay aside.
    psn.stop()
    psn.start()
    pan.wait_state("psn1", "connected")
    assert outbox_waiting(psn) == 0
    assert f"Outbox refused:  {n} certificates" in psn.status().stdout
    psn.stop()
    pan.stop()
