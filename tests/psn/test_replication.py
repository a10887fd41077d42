"""The PAN's event log on real executables (issue 4: `pan user add` and
`pan template add` replicated to the PSNs; DESIGN.md section 3).

Enrollment users and templates are defined on the PAN, numbered in its
event log, published on 8672 and applied by every PSN in order; a PSN that
was down catches up when it comes back.  The EST server of each PSN then
accepts the users (HTTP Basic) and serves the labels.  Refusals change
nothing: the event log does not move.  A PSN's own alarms reach the PAN in
its heartbeats and clear there when the PSN stops reporting them."""

import base64
import os
import re
import signal
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from iselab import (BUILD, LINK_TIMEOUT, clean_env, exe, lab, member_events, openssl,  # noqa: E402,F401
                    run, wait_for)
import test_est_psn as est  # noqa: E402

USER, PASSWORD = "alice", "alice-password-1"
CTL = str(BUILD / "tests" / "tools" / "ctl")


def running_psn(lab, host="psn1", pan=None):
    pan = pan or lab.pan()
    js = pan.node_add(host, "psn")
    psn = lab.psn(host)
    psn.join(js, check=True)
    psn.start()
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
             f"{host} to serve EST", detail=psn.log_text)
    # Its own certificates delivered (each is an event on the PAN, for the
    # SAN's replica), so that the log stands still for the checks below.
    wait_for(lambda: re.search(r"Outbox:\s+0 certificates",
                               psn.cli("status").stdout) is not None,
             LINK_TIMEOUT, f"{host}'s outbox to drain", detail=psn.log_text)
    psn.wait_events(pan)
    return pan, psn


def config_keys(psn):
    """The user/ and template/ keys of a PSN's store (mdb_dump -p)."""
    p = run(["mdb_dump", "-p", "-s", "config", str(psn.datadir / "store")], timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    start = lines.index("HEADER=END") + 1
    keys = [lines[i].strip() for i in range(start, len(lines) - 1, 2)]
    return sorted(k for k in keys if k.startswith(("user/", "template/")))


def enroll_basic(lab, psn, user, password, cn, label=None):
    e = est.Est(lab, psn, psn.address)
    csr = est.make_csr(lab, cn, cn)
    return e.request("simpleenroll", "-u", f"{user}:{password}", data=csr, label=label)


def test_users_and_templates_replicate(lab):
    pan, psn = running_psn(lab)
    seq0 = pan.event_seq()
    # Before the user exists: 401 with the Basic challenge.
    status, hdrs, _ = enroll_basic(lab, psn, USER, PASSWORD, "dev0")
    assert status == 401, hdrs
    assert re.search(r'(?im)^www-authenticate: basic realm="', hdrs)

    p = pan.user_add(USER, PASSWORD)
    assert f"enrollment user {USER} added" in p.stdout
    # The password is on stdin only, and never logged or stored in clear.
    assert PASSWORD not in pan.log_text()
    dump = run(["mdb_dump", "-p", "-a", str(pan.datadir / "store")], timeout=60).stdout
    assert PASSWORD not in dump and "pbkdf2-sha256$" in dump
    p = pan.template_add("short", "--validity", "2d", "--pop", "off",
                         "--key-types", "ec:p256,ec:p384")
    assert "template short added" in p.stdout
    assert pan.event_seq() == seq0 + 2
    psn.wait_events(pan)
    assert config_keys(psn) == ["template/short", f"user/{USER}"]

    # The PSN's EST server takes the user, and the label its template.
    status, _, body = enroll_basic(lab, psn, USER, PASSWORD, "dev1")
    assert status == 200, body
    status, _, body = enroll_basic(lab, psn, USER, PASSWORD, "dev2", label="short")
    assert status == 200, body
    cert = est.issued_cert(lab, body, "dev2")
    days = openssl("x509", "-in", str(cert), "-noout", "-startdate", "-enddate").stdout
    nb = re.search(r"notBefore=(.*)", days).group(1)
    na = re.search(r"notAfter=(.*)", days).group(1)
    import datetime
    fmt = "%b %d %H:%M:%S %Y %Z"
    span = datetime.datetime.strptime(na, fmt) - datetime.datetime.strptime(nb, fmt)
    assert abs(span.total_seconds() - 2 * 86400) < 3700, span
    # The template refuses an RSA key.
    e = est.Est(lab, psn, psn.address)
    csr = est.make_csr(lab, "dev3", "dev3", key="rsa:2048")
    status, _, body = e.request("simpleenroll", "-u", f"{USER}:{PASSWORD}", data=csr,
                                label="short")
    assert status == 400, body
    # A wrong password is still 401.
    status, _, _ = enroll_basic(lab, psn, USER, "wrong-password", "dev4")
    assert status == 401

    # The list on the PAN shows them; the default template is always there.
    p = pan.cli("user", "list", check=True)
    assert p.stdout.split() == [USER]
    p = pan.cli("template", "list", check=True)
    assert "EAP_Authentication_Certificate_Template" in p.stdout
    assert re.search(r"(?m)^short\s+tls-client\s+2d\s+off", p.stdout), p.stdout

    # Removal replicates too: the user is refused, the label is gone.
    pan.cli("user", "remove", USER, check=True)
    pan.cli("template", "remove", "short", check=True)
    psn.wait_events(pan)
    assert config_keys(psn) == []
    status, _, _ = enroll_basic(lab, psn, USER, PASSWORD, "dev5")
    assert status == 401
    status, _, _ = enroll_basic(lab, psn, "nobody", PASSWORD, "dev6", label="short")
    assert status == 404


def test_refusals_change_nothing(lab):
    pan = lab.pan()
    seq0 = pan.event_seq()
    # Short password, bad names, a password in argv: refused, log unmoved.
    assert pan.user_add("bob", "short", check=False).returncode != 0
    assert pan.user_add("bad:name", "long-enough-1", check=False).returncode != 0
    p = pan.cli("user", "add", "carol", "--record", "pbkdf2-sha256$1$00$00", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    p = pan.cli("user", "remove", "nobody", check=False)
    assert p.returncode == 1 and "no enrollment user nobody" in p.stderr
    bad_templates = [
        ["x", "--validity", "forever"],
        ["x", "--validity", "4000d"],
        ["x", "--key-types", "ec:p521"],
        ["x", "--key-types", "ec:p256", "--keygen", "rsa:2048"],
        ["x", "--pop", "maybe"],
        ["x", "--profile", "ocsp-responder"],
        ["x", "--colour", "blue"],
        ["default"],
        ["EAP_Authentication_Certificate_Template"],
        ["../etc"],
        ["x", "--validity"],
        [],
    ]
    for args in bad_templates:
        p = pan.cli("template", "add", *args, check=False)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stderr.strip(), args
    p = pan.cli("template", "remove", "nothing", check=False)
    assert p.returncode == 1
    assert pan.event_seq() == seq0
    assert pan.cli("user", "list", check=True).stdout.strip() == "No enrollment users."


def test_psn_catches_up_after_downtime(lab):
    pan, psn = running_psn(lab)
    pan.user_add("u1", "password-one")
    psn.wait_events(pan)
    psn.stop()
    # Changes while the PSN is away: it missed every publication.
    for i in range(2, 6):
        pan.user_add(f"u{i}", f"password-{i}xx")
    pan.cli("user", "remove", "u1", check=True)
    pan.template_add("later", "--pop", "required")
    want = pan.event_seq()
    psn.start()
    psn.wait_events(pan)
    # At least: the log also holds the alarm records of its absence.
    assert member_events(psn)[0] >= want
    assert config_keys(psn) == ["template/later"] + [f"user/u{i}" for i in range(2, 6)]
    assert re.search(r"caught up \d+ event", psn.log_text())
    # Published events arrive without waiting for a heartbeat: a change
    # made now is applied within a fraction of the heartbeat interval.
    pan.user_add("u6", "password-6xx")
    psn.wait_events(pan, timeout=5)


def test_two_psns_and_node_alarms(lab):
    pan, psn1 = running_psn(lab, "psn1")
    _, psn2 = running_psn(lab, "psn2", pan=pan)
    pan.user_add(USER, PASSWORD)
    psn1.wait_events(pan)
    psn2.wait_events(pan)
    assert config_keys(psn1) == config_keys(psn2) == [f"user/{USER}"]

    # A service of psn2 reports an alarm: the PAN shows it, then clears it.
    p = run([CTL, str(psn2.datadir), "alarm", "raise", "EST Client CA Retrieval Failed",
             "major", "cacerts: connection refused"], env=clean_env())
    assert p.returncode == 0, p.stderr
    wait_for(lambda: "EST Client CA Retrieval Failed" in pan.alarms(), LINK_TIMEOUT,
             "the PSN's alarm on the PAN", detail=lambda: pan.alarms())
    line = [ln for ln in pan.alarms().splitlines() if "EST Client CA" in ln][0]
    assert "psn2" in line and "major" in line and "connection refused" in line
    assert "Alarm:" in psn2.cli("status", check=True).stdout
    # Bad requests on the control socket are refused, nothing raised.
    p = run([CTL, str(psn2.datadir), "alarm", "raise", "X", "apocalyptic", "t"],
            env=clean_env())
    assert p.returncode == 2
    run([CTL, str(psn2.datadir), "alarm", "clear", "EST Client CA Retrieval Failed"],
        env=clean_env(), check=True)
    wait_for(lambda: "EST Client CA" not in pan.alarms(), LINK_TIMEOUT,
             "the PSN's alarm to clear on the PAN", detail=lambda: pan.alarms())
    assert "EST Client CA Retrieval Failed" in pan.alarms(all=True)
    assert "X " not in pan.alarms(all=True)

    # Removing psn2 ends its subscription; psn1 keeps getting events.
    pan.cli("node", "remove", "psn2", check=True)
    pan.user_add("after-removal", "password-after")
    psn1.wait_events(pan, timeout=10)
    assert "user/after-removal" in config_keys(psn1)
    assert "user/after-removal" not in config_keys(psn2)


def test_service_down_alarms(lab):
    """The CA service cannot start (its key is gone): after the grace time
    the PAN shows CA Service Down and EST Service Down for the PSN (EST
    follows CA); with the key back, the supervisor's next restart brings
    both up and the alarms clear by themselves."""
    pan, psn = running_psn(lab)
    key = psn.datadir / "ca" / "endpoint-sub-ca.key"
    hidden = key.with_name("endpoint-sub-ca.key.away")
    key.rename(hidden)
    for pid in psn.group_pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "ca-service":
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "CA Service Down" in pan.alarms() and "EST Service Down" in pan.alarms(),
             LINK_TIMEOUT + 10, "CA and EST service alarms on the PAN",
             detail=lambda: pan.alarms() + "\n" + psn.log_text()[-3000:])
    assert not est.tcp_listening(psn.address.ip)
    hidden.rename(key)
    wait_for(lambda: "Service Down" not in pan.alarms(), 60,
             "the service alarms to clear", detail=lambda: pan.alarms() + psn.log_text()[-3000:])
    assert est.tcp_listening(psn.address.ip)
    all_alarms = pan.alarms(all=True)
    assert "CA Service Down" in all_alarms and "EST Service Down" in all_alarms


def test_revoke_hold_release_reach_the_psn(lab):
    """`pan cert revoke|hold|release` on a certificate a PSN issued: the
    event reaches the PSN, whose EST server then refuses the certificate
    for client authentication (simplereenroll), and accepts it again after
    a release.  Every refused transition changes nothing."""
    import time
    pan, psn = running_psn(lab)
    pan.user_add(USER, PASSWORD)
    psn.wait_events(pan)
    status, _, body = enroll_basic(lab, psn, USER, PASSWORD, "phone1")
    assert status == 200, body
    cert = est.issued_cert(lab, body, "phone1")
    key = lab.tmp / "phone1.key"
    serial = openssl("x509", "-in", str(cert), "-noout", "-serial").stdout.split("=")[1].strip()
    serial = serial.lstrip("0").lower() or "0"
    # The PAN has it once the outbox delivered it.
    wait_for(lambda: pan.cli("cert", "show", serial).returncode == 0, LINK_TIMEOUT,
             "the certificate to reach the PAN")
    e = est.Est(lab, psn, psn.address)

    def reenroll(n):
        csr = lab.tmp / f"phone1-re{n}.csr"
        openssl("req", "-new", "-key", str(key), "-subj", "/CN=phone1", "-outform", "DER",
                "-out", str(csr))
        return e.request("simplereenroll", "--cert", str(cert), "--key", str(key),
                         data=base64.encodebytes(csr.read_bytes()))[0]

    def drained():
        """What the PSN issued is delivered (its cert-issued event is in
        the log) before the log must stand still."""
        wait_for(lambda: re.search(r"Outbox:\s+0 certificates",
                                   psn.cli("status").stdout) is not None,
                 LINK_TIMEOUT, "psn1's outbox to drain", detail=psn.log_text)

    assert reenroll(1) == 200
    drained()
    seq = pan.event_seq()
    # Refusals: release of a good certificate, unknown reason, no serial.
    assert "already good" in pan.cli("cert", "release", serial, check=True).stdout
    assert pan.cli("cert", "revoke", serial, "--reason", "boredom", check=False).returncode == 2
    assert pan.cli("cert", "revoke", "--data-dir-less", check=False).returncode == 2
    assert pan.cli("cert", "revoke", "abcdef0123", check=False).returncode == 1
    assert pan.cli("cert", "hold", serial, "--node", "nosuchnode", check=False).returncode == 1
    assert pan.event_seq() == seq

    # Hold: refused at the PSN; release: accepted again.
    t0 = time.monotonic()
    p = pan.cli("cert", "hold", serial, check=True)
    assert "on hold" in p.stdout
    psn.wait_events(pan)
    print(f"hold reached the PSN in {(time.monotonic() - t0) * 1000:.0f} ms")
    assert reenroll(2) == 403
    assert "certificateHold" in pan.cli("cert", "show", serial, check=True).stdout
    pan.cli("cert", "release", serial, check=True)
    psn.wait_events(pan)
    assert reenroll(3) == 200

    # Revoke: for good; hold and release are refused afterwards.
    p = pan.cli("cert", "revoke", serial, "--reason", "keyCompromise", check=True)
    assert "revoked: keyCompromise" in p.stdout
    psn.wait_events(pan)
    assert reenroll(4) == 403
    show = pan.cli("cert", "show", serial, check=True).stdout
    assert re.search(r"Status:\s+revoked", show) and "keyCompromise" in show
    drained()  # reenroll(3)'s certificate
    seq = pan.event_seq()
    assert pan.cli("cert", "hold", serial, check=False).returncode == 1
    assert pan.cli("cert", "release", serial, check=False).returncode == 1
    p = pan.cli("cert", "revoke", serial, "--reason", "superseded", check=True)
    assert "already revoked" in p.stdout
    assert pan.event_seq() == seq
    assert serial in pan.cli("cert", "list", "--status", "revoked", check=True).stdout.lower()

    # A PSN that was down while a certificate was revoked catches up.
    status, _, body = enroll_basic(lab, psn, USER, PASSWORD, "phone2")
    assert status == 200
    cert2 = est.issued_cert(lab, body, "phone2")
    wait_for(lambda: pan.cli("cert", "list", "--node", "psn1").stdout.count("phone2") == 1,
             LINK_TIMEOUT, "phone2 on the PAN")
    psn.stop()
    p = pan.cli("cert", "revoke", "--subject", "CN=phone2", "--node", "psn1", check=True)
    assert "revoked" in p.stdout
    psn.start()
    wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT, "EST back")
    psn.wait_events(pan)
    cert, key = cert2, lab.tmp / "phone2.key"
    assert reenroll(5) == 403


def test_san_keeps_the_log_too(lab):
    """A SAN applies the same events (its replica starts here, issue 7)."""
    pan = lab.pan()
    pan.user_add(USER, PASSWORD)
    pan.template_add("iot", "--validity", "30d")
    san = lab.san("san1")
    san.join(pan.node_add("san1", "san"), check=True)
    san.start()
    san.wait_events(pan)
    assert config_keys(san) == ["template/iot", f"user/{USER}"]


def test_session_services_and_ca_service_from_the_pan(lab):
    """`pan node edit --session-services` and `pan ca disable|enable` reach
    the running PSN: CA and EST (8084) stop and start, the status table
    says disabled, the OCSP responder keeps answering; a PSN that was
    down meanwhile comes back with the settings the PAN made."""
    pan, psn = running_psn(lab)
    ip = psn.address.ip

    def row(name):
        m = re.search(rf"^{name}\s+(\S+(?: running)?)", psn.cli("status", check=True).stdout,
                      re.M)
        return m.group(1) if m else None

    p = pan.cli("ca", "disable", "--node", "psn1", check=True)
    assert "disabled" in p.stdout
    wait_for(lambda: not est.tcp_listening(ip), 20, "EST to stop with the CA service")
    wait_for(lambda: row("Certificate Authority Service") == "disabled", 20,
             "the CA service to show disabled")
    assert row("EST Service") == "disabled"
    assert est.tcp_listening(ip, 2560)
    # The PAN's view of every node's table (the admin GUI's), from heartbeats.

    def pan_rows():
        out = pan.cli("node", "list", "--services", check=True).stdout
        block = out.split("\npsn1 (", 1)[1] if "\npsn1 (" in out else ""
        return {m.group(1).strip(): m.group(2)
                for m in re.finditer(r"^(\S.*?)\s{2,}(running|disabled|not running|"
                                     r"restarting|initializing)\b", block, re.M)}
    wait_for(lambda: pan_rows().get("Certificate Authority Service") == "disabled", 20,
             "pan node list --services to show the CA service disabled",
             detail=lambda: pan.cli("node", "list", "--services").stdout)
    rows = pan_rows()
    assert rows.get("EST Service") == "disabled", rows
    assert rows.get("OCSP Responder") == "running", rows
    assert rows.get("Messaging Service") == "running", rows
    assert re.search(r"^Provisioning Service\s+running", psn.cli("status").stdout, re.M)
    # Disabled on purpose is no alarm.
    time.sleep(4)
    assert "Service Down" not in pan.alarms()
    assert "already disabled" in pan.cli("ca", "disable", "--node", "psn1", check=True).stdout

    pan.cli("ca", "enable", check=True)   # every PSN
    wait_for(lambda: est.tcp_listening(ip), 30, "EST back with the CA service",
             detail=psn.log_text)
    assert row("Certificate Authority Service") == "running"

    pan.cli("node", "edit", "psn1", "--session-services", "off", check=True)
    wait_for(lambda: row("Provisioning Service") == "disabled", 20,
             "session services off")
    assert not est.tcp_listening(ip)
    assert est.tcp_listening(ip, 2560)

    # Turned on while the PSN is down: it starts with the PAN's settings.
    psn.stop()
    pan.cli("node", "edit", "psn1", "--session-services", "on", check=True)
    psn.start()
    wait_for(lambda: est.tcp_listening(ip), 30, "EST after the restart", detail=psn.log_text)
    psn.wait_events(pan)
    assert row("EST Service") == "running"
    # Refusals: a SAN, an unknown node, a bad value.
    assert pan.cli("node", "edit", "nosuch", "--session-services", "on",
                   check=False).returncode == 1
    assert pan.cli("node", "edit", "psn1", "--session-services", "maybe",
                   check=False).returncode == 2
    assert pan.cli("ca", "disable", "--node", "nosuch", check=False).returncode == 1
