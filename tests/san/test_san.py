"""san join and san run on real executables (issue 3): the SAN's Node CA
issued by the PAN's Root CA, its keys, heartbeats and refusals."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from iselab import (PASSPHRASE, basic_constraints, cert_issuer, cert_subject,  # noqa: E402
                    cert_text, ext_key_usage, files_below, key_usage, lab,  # noqa: F401
                    private_key_secrets, split_pem, verify, zlint_findings)


def joined_san(lab):
    pan = lab.pan()
    js = pan.node_add("san1", "san")
    san = lab.san("san1")
    san.join(js, check=True)
    return pan, san


def test_san_join_node_ca(lab):
    pan, san = joined_san(lab)
    d = san.datadir
    for f in ["ca/node-ca.crt", "ca/node-ca.key", "ca/chain.pem", "ca/root-ca.crt",
              "curve.key", "curve.pub", "deployment.conf", "node.conf"]:
        assert (d / f).is_file(), f"{f} missing after join"
    root, ca = d / "ca/root-ca.crt", d / "ca/node-ca.crt"
    assert root.read_text() == (pan.datadir / "ca/root-ca.crt").read_text()
    chain = split_pem((d / "ca/chain.pem").read_text())
    assert [c.strip() for c in chain] == [(pan.datadir / "ca/root-ca.crt").read_text().strip()], \
        "a SAN's chain is the Root CA alone"
    assert cert_subject(ca) == "CN=Certificate Services Node CA - san1"
    assert cert_issuer(ca) == "CN=Certificate Services Root CA - pan1"
    t = cert_text(ca)
    assert basic_constraints(t) == (True, "CA:TRUE, pathlen:1")
    crit, ku = key_usage(t)
    assert crit and "Certificate Sign" in ku and "CRL Sign" in ku
    assert ext_key_usage(t) is None
    p = verify(root, ca)
    assert p.returncode == 0, p.stdout + p.stderr
    findings = zlint_findings(ca)
    assert not findings, f"zlint {findings}"
    # The PAN's Node CA is not this one: the SAN made its own key.
    assert ca.read_text() != (pan.datadir / "ca/node-ca.crt").read_text()
    assert "Certificate Services Node CA - san1" in pan.ca_certs()


def test_san_keys_stay_on_the_san(lab):
    pan, san = joined_san(lab)
    secrets = {}
    for k in ["ca/node-ca.key", "curve.key"]:
        p = san.datadir / k
        assert (p.stat().st_mode & 0o777) == 0o600, k
        assert p.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----"), k
        secrets[k] = private_key_secrets(p, PASSPHRASE)
    pan.stop()
    for f in files_below(pan.datadir):
        body = f.read_bytes()
        for k, values in secrets.items():
            for v in values:
                assert v not in body, f"PAN file {f} holds the SAN's {k}"


def test_san_run_heartbeats(lab):
    pan, san = joined_san(lab)
    assert pan.node_state("san1") == "registered"
    san.start()
    pan.wait_state("san1", "connected")
    row = pan.node_list()["san1"]
    assert row[1] == "san"
    st = san.status().stdout
    assert re.search(r"PROCESS NAME\s+STATE\s+PROCESS ID", st), st
    san.stop()
    pan.wait_state("san1", "disconnected")
    pan.stop()


def test_san_refuses_psn_token(lab):
    pan = lab.pan()
    js = pan.node_add("san1", "psn")
    before = pan.snapshot()
    san = lab.san("san1")
    p = san.join(js, check=None)
    assert p.returncode > 0, p.stdout + p.stderr
    assert re.search(r"role|\bpsn\b", p.stderr, re.I), p.stderr
    assert not san.joined
    assert pan.snapshot() == before
    # The token is still the PSN's to use.
    lab.psn("san1", datadir=lab.tmp / "as-psn").join(js, check=True)


def test_san_refuses_wrong_secret(lab):
    pan = lab.pan()
    js = pan.node_add("san1", "san")
    before = pan.snapshot()
    san = lab.san("san1")
    p = san.join(js.replace(secret=js.secret[::-1]), check=None)
    assert p.returncode > 0 and re.search(r"token", p.stderr, re.I), p.stderr
    assert not san.joined
    assert pan.snapshot() == before
