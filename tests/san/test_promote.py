"""Promotion of the SAN (issue 7 items 3 and 4), on real processes: a PAN,
a SAN and two PSNs.

The PAN's CA store is exported and imported on the SAN; the PAN is killed
(SIGKILL); `san promote` makes the SAN the primary at epoch 2.  The PSNs
find it by themselves (deployment.conf named it since its first
heartbeat) and switch without a new join: heartbeats, the outbox of
certificates issued over EST while the primary was away (none lost, none
twice), a revocation made on the new primary (every PSN's OCSP responder
says revoked, checked with openssl ocsp), and a new PSN joining the new
primary.  The old PAN, started again, is refused: it learns the higher
epoch, refuses admin writes ("not primary: epoch 1 < 2, rejoin as
secondary") and the PSNs stay with the new primary.  Refusals: promote
without the imported CA store, on a PSN or the PAN, twice."""

import re
import sys
import threading  # noqa: F401
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "psn"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_est_psn as est  # noqa: E402
import test_revocation as rv  # noqa: E402
from test_ca_store import export, import_, key_file  # noqa: E402
from test_faults import outbox_waiting  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pan"))
import test_ocsp_pan as ocsp_pan  # noqa: E402
from iselab import (HEARTBEAT_INTERVAL, LINK_TIMEOUT, cert_serial, exe, lab, openssl,  # noqa: E402,F401
                    parse_table, run, wait_for)

# Switching takes a heartbeat timeout (3s in tests) and a reconnect; this
# bounds it generously on a loaded machine.
SWITCH_TIMEOUT = 120


def deployment_conf(node):
    """{section.key: value} of a member's deployment.conf."""
    out, section = {}, ""
    for line in (node.datadir / "deployment.conf").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            k, v = (x.strip() for x in line.split("=", 1))
            out[f"{section}.{k}"] = v
    return out


def primary_of(node):
    """(primary host name, epoch) as deployment.conf says."""
    c = deployment_conf(node)
    for n in (1, 2):
        if c.get(f"admin{n}.role") == "pan":
            return c[f"admin{n}.hostname"], int(c["deployment.epoch"])
    return None, int(c["deployment.epoch"])


def link_line(node):
    m = re.search(r"^PAN link:.*$", node.cli("status").stdout, re.M)
    return m.group(0) if m else ""


def wait_primary(node, host, epoch, timeout=SWITCH_TIMEOUT):
    wait_for(lambda: primary_of(node) == (host, epoch), timeout,
             f"{node.hostname} to follow {host} at epoch {epoch}",
             detail=lambda: f"{primary_of(node)}\n{node.diagnostics()}")


def deployment(lab, psns=2):
    pan = lab.pan()
    pan.user_add(rv.USER, rv.PASSWORD)
    san = lab.san("san1")
    san.join(pan.node_add("san1", "san"), check=True)
    san.start()
    nodes = []
    for i in range(psns):
        psn = lab.psn(f"psn{i + 1}")
        psn.join(pan.node_add(psn.hostname, "psn"), check=True)
        psn.start()
        nodes.append(psn)
    for psn in nodes:
        wait_for(lambda: est.tcp_listening(psn.address.ip), est.START_TIMEOUT,
                 f"{psn.hostname} to serve EST", detail=psn.log_text)
    # Every PSN learns where the SAN serves (its first heartbeat), through
    # the log, into deployment.conf.
    for psn in nodes:
        wait_for(lambda: deployment_conf(psn).get("admin2.hostname") == "san1", LINK_TIMEOUT,
                 f"{psn.hostname} to learn san1", detail=psn.diagnostics)
        assert deployment_conf(psn)["admin2.role"] == "san"
    return pan, san, nodes


def import_store(lab, pan, san):
    out = lab.tmp / "ca-store.p12"
    kf = key_file(lab)
    export(pan, out, "--key-file", str(kf), check=True)
    import_(san, out, "--key-file", str(kf), check=True)


def serials(node, status=None):
    args = ["cert", "list", "--limit", "1000"] + (["--status", status] if status else [])
    rows = parse_table(node.cli(*args, check=True).stdout, "SERIAL")
    return [f[0].lower().lstrip("0") for f, _ in rows]


def san_link_alarms(san, all=False):
    """`san alarms` lines of Queue Link Error for the link to pan1."""
    out = san.cli("alarms", *(["--all"] if all else []), check=True).stdout
    return [ln for ln in out.splitlines() if "Queue Link Error" in ln and " pan1 " in ln]


def test_link_alarm_while_pan_down(lab):
    """Issue 7 item 4: the SAN raises Queue Link Error for its own link to
    the PAN while the PAN is down, and clears it when the PAN is back; the
    PSNs keep issuing meanwhile and their outboxes drain after."""
    pan, san, psns = deployment(lab)
    for node in (san, *psns):
        node.wait_events(pan)
    replica_alarms = mdb_alarms(san)
    assert san_link_alarms(san, all=True) == []

    pan.kill_group()
    # heartbeat.timeout (3s in tests) and a tick: LINK_TIMEOUT bounds it.
    wait_for(lambda: san_link_alarms(san), LINK_TIMEOUT,
             "san1 to raise Queue Link Error for pan1", detail=san.diagnostics)
    (line,) = san_link_alarms(san)
    assert "major" in line and "no heartbeat ack from pan1" in line, line
    # Kept apart from the replica: its alarms table is the PAN's only.
    assert mdb_alarms(san) == replica_alarms
    serials_during = [rv.enroll(lab, psn, f"down-{psn.hostname}")[1] for psn in psns]
    for psn in psns:
        assert outbox_waiting(psn) >= 1

    pan.start()
    wait_for(lambda: not san_link_alarms(san), LINK_TIMEOUT,
             "san1 to clear Queue Link Error for pan1", detail=san.diagnostics)
    (line,) = san_link_alarms(san, all=True)   # cleared, still listed
    for psn in psns:
        wait_for(lambda: outbox_waiting(psn) == 0, SWITCH_TIMEOUT,
                 f"{psn.hostname}'s outbox to drain", detail=psn.diagnostics)
    wait_for(lambda: set(serials_during) <= set(serials(pan)), SWITCH_TIMEOUT,
             "the certificates issued meanwhile on the PAN")
    # A second loss gives a second alarm, not the first one again.
    pan.kill_group()
    wait_for(lambda: san_link_alarms(san), LINK_TIMEOUT,
             "san1 to raise Queue Link Error again", detail=san.diagnostics)
    assert len(san_link_alarms(san, all=True)) == 2


def mdb_alarms(node):
    """The alarms table of a node's store, read with mdb_dump."""
    p = run(["mdb_dump", "-s", "alarms", str(node.datadir / "store")], timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_promote(lab):
    pan, san, psns = deployment(lab)
    psn1, psn2 = psns
    before = rv.enroll(lab, psn1, "before")[1]

    # Without the imported CA store: refused, nothing changes.
    p = san.cli("promote", check=False)
    assert p.returncode == 1 and "no imported CA store" in p.stderr, p.stdout + p.stderr
    assert primary_of(san) == ("pan1", 1)
    import_store(lab, pan, san)
    # Not on a PSN or on the PAN.
    p = run([exe("san"), "promote", "--data-dir", str(psn1.datadir)], check=False)
    assert p.returncode == 1 and "only a SAN can be promoted" in p.stderr, p.stderr
    p = run([exe("san"), "promote", "--data-dir", str(pan.datadir)], check=False)
    assert p.returncode == 1 and "only a SAN can be promoted" in p.stderr, p.stderr
    # A secondary refuses the primary's writes.
    p = san.cli("node", "add", "psn9", "--role", "psn", check=False)
    assert p.returncode == 1 and "not primary" in p.stderr, p.stdout + p.stderr

    san.wait_events(pan)
    pan.kill_group()

    # Enrollments while there is no primary: the outbox keeps them.
    during = [rv.enroll(lab, psn1, "during1")[1], rv.enroll(lab, psn2, "during2")[1]]

    p = san.cli("promote", check=True)
    assert "now the primary" in p.stdout and "epoch 2" in p.stdout, p.stdout
    assert primary_of(san) == ("san1", 2)
    # The same process goes on as the primary.
    wait_for(lambda: "Primary:         yes, epoch 2" in san.cli("status").stdout, 60,
             "san1 to serve as the primary", detail=san.diagnostics)
    p = san.cli("promote", check=False)
    assert p.returncode == 1 and "primary already" in p.stderr, p.stdout + p.stderr

    # The PSNs switch by themselves, without a new join.
    for psn in psns:
        wait_primary(psn, "san1", 2)
    # Enrollment through EST goes on, through the new primary.
    after = rv.enroll(lab, psn2, "after")[1]
    want = {before, *during, after}
    wait_for(lambda: want <= set(serials(san)), SWITCH_TIMEOUT,
             "every certificate on the new primary",
             detail=lambda: f"{want - set(serials(san))}\n{psn1.diagnostics()}")
    listed = serials(san)
    for s in want:
        assert listed.count(s) == 1, f"{s} listed {listed.count(s)} times"

    # A revocation on the new primary reaches every PSN's OCSP responder.
    cert, serial = rv.enroll(lab, psn1, "revokeme")
    wait_for(lambda: serial in serials(san), SWITCH_TIMEOUT, "revokeme on san1")
    san.cli("cert", "revoke", serial, check=True)
    r = rv.Responder(lab, psn1, cert)
    wait_for(lambda: r.status()[0] == "revoked", LINK_TIMEOUT, "psn1's OCSP to say revoked",
             detail=lambda: r.status()[1])

    # A new PSN joins the new primary with a join string it made.
    js = san.node_add_string("psn3")
    psn3 = lab.psn("psn3")
    psn3.join(js, check=True)
    assert primary_of(psn3) == ("san1", 2)
    psn3.start()
    wait_for(lambda: "connected" in link_line(psn3), LINK_TIMEOUT, "psn3 connected",
             detail=psn3.diagnostics)

    check_old_pan_refused(pan, psns)
    check_old_node_ca_ocsp(lab, pan, san, psn2)


def check_old_pan_refused(pan, psns):
    """The old PAN started again: it learns epoch 2, refuses writes; the
    PSNs stay with the new primary (deployment.conf and psn status)."""
    pan.start()
    wait_for(lambda: "not primary: epoch 1 < 2" in pan.cli("status").stdout, SWITCH_TIMEOUT,
             "the old PAN to learn epoch 2", detail=pan.diagnostics)
    p = pan.user_add("someone", "someone-password-1", check=False)
    assert p.returncode == 1 and "not primary: epoch 1 < 2, rejoin as secondary" in p.stderr, \
        p.stdout + p.stderr
    p = pan.cli("cert", "revoke", "01", check=False)
    assert p.returncode == 1 and "not primary" in p.stderr, p.stdout + p.stderr
    p = pan.cli("node", "add", "psn8", "--role", "psn", check=False)
    assert p.returncode == 1 and "not primary" in p.stderr, p.stdout + p.stderr
    for psn in psns:
        assert primary_of(psn) == ("san1", 2)
        assert re.search(r"connected \(primary san1, epoch 2\)", link_line(psn)), link_line(psn)


def check_old_node_ca_ocsp(lab, pan, san, psn):
    """The promoted SAN's OCSP responder answers for what the old PAN's
    Node CA issued (a PSN's Endpoint Sub CA), signed by the imported
    responder certificate: good, then revoked by `san cert revoke`;
    strictly verified by openssl ocsp up to the Root CA."""
    root = san.datadir / "ca" / "root-ca.crt"
    old_node = san.datadir / "ca" / "imported" / "node-ca.crt"
    responder = san.datadir / "ca" / "imported" / "ocsp-responder.crt"
    assert old_node.read_text() == (pan.datadir / "ca" / "node-ca.crt").read_text()
    sub = psn.datadir / "ca" / "endpoint-sub-ca.crt"
    args = (old_node, ocsp_pan.url_of(san), sub, root, [old_node])
    assert ocsp_status(lab, *args) == "good", ocsp_status(lab, *args)
    # Signed by the imported responder certificate, not the SAN's own.
    rc, out = ocsp_pan.ocsp(lab, old_node, ocsp_pan.url_of(san), "-cert", str(sub),
                            "-resp_text", cafile=root, others=[old_node])
    resp_cn = openssl("x509", "-in", str(responder), "-noout", "-subject").stdout
    assert resp_cn.split("CN", 1)[1].split("=", 1)[1].strip() in out, out
    serial = cert_serial(sub).lower().lstrip("0")
    assert serial in serials(san)
    san.cli("cert", "revoke", serial, check=True)
    wait_for(lambda: ocsp_status(lab, *args) == "revoked", LINK_TIMEOUT,
             "the old Node CA's Sub CA revoked at the promoted SAN's responder",
             detail=lambda: ocsp_status(lab, *args))
    # A serial the old Node CA never issued: unknown, not good.
    own = san.datadir / "ca" / "node-ca.crt"
    rc, out = ocsp_pan.ocsp(lab, old_node, ocsp_pan.url_of(san), "-cert", str(own),
                            cafile=root, others=[old_node])
    assert ocsp_pan.status_of(out, own) != "good", out


def ocsp_status(lab, issuer, url, cert, root, others):
    """The status a responder gives cert, its response strictly verified."""
    rc, out = ocsp_pan.ocsp(lab, issuer, url, "-cert", str(cert), cafile=root, others=others)
    return ocsp_pan.status_of(out, cert) if "Response verify OK" in out else out


def admin_hosts(node):
    """The admin nodes a member's deployment.conf names: {host: role}."""
    c = deployment_conf(node)
    return {c[f"admin{n}.hostname"]: c[f"admin{n}.role"] for n in (1, 2, 3)
            if f"admin{n}.hostname" in c}


def test_node_remove_san_leaves_admin_nodes(lab):
    """`pan node remove san1`: a deployment event without san1, so the
    PSNs drop it from deployment.conf and do not probe it when the PAN
    stops answering."""
    pan, san, psns = deployment(lab)
    p = pan.cli("node", "remove", "san1", check=True)
    assert "san1 removed from the admin nodes" in p.stdout, p.stdout
    for psn in psns:
        wait_for(lambda: admin_hosts(psn) == {"pan1": "pan"}, LINK_TIMEOUT,
                 f"{psn.hostname} to drop san1 from deployment.conf",
                 detail=lambda: f"{admin_hosts(psn)}\n{psn.diagnostics()}")
        assert primary_of(psn) == ("pan1", 1)
    assert "Admin node:" not in pan.cli("status").stdout
    # A restart of the PAN does not bring it back.
    pan.stop()
    pan.start()
    assert "Admin node:" not in pan.cli("status").stdout
    for psn in psns:
        wait_for(lambda: "connected" in link_line(psn), LINK_TIMEOUT, f"{psn.hostname} back")
    # The PAN gone, the PSNs have no other admin node to ask: their link
    # goes down and stays on pan1; no probe of san1 in their logs.
    pan.kill_group()
    for psn in psns:
        wait_for(lambda: "disconnected" in link_line(psn), LINK_TIMEOUT,
                 f"{psn.hostname} to notice the PAN's silence")
    # Probing would start at the tick that noticed; two more heartbeat
    # intervals (1s in tests) for a probe to show.
    time.sleep(2 * HEARTBEAT_INTERVAL)
    for psn in psns:
        assert "asking the admin node san1" not in psn.log_text()
        assert admin_hosts(psn) == {"pan1": "pan"}


def test_node_remove_old_pan_on_promoted_san(lab):
    """`san node remove pan1` on the promoted SAN drops the former primary
    from the admin nodes: the PSNs' deployment.conf no longer names it,
    the SAN stops probing it, also after a restart."""
    pan, san, psns = deployment(lab)
    import_store(lab, pan, san)
    san.wait_events(pan)
    pan.kill_group()
    san.cli("promote", check=True)
    for psn in psns:
        wait_primary(psn, "san1", 2)
        wait_for(lambda: admin_hosts(psn) == {"san1": "pan", "pan1": "san"}, LINK_TIMEOUT,
                 f"{psn.hostname} to know pan1 as a secondary")
    assert "Admin node:      pan1" in san.cli("status").stdout
    p = san.cli("node", "remove", "pan1", check=True)
    assert "pan1 removed from the admin nodes" in p.stdout, p.stdout
    p = san.cli("node", "remove", "pan1", check=False)
    assert p.returncode == 1 and "no node pan1" in p.stderr, p.stdout + p.stderr
    for psn in psns:
        wait_for(lambda: admin_hosts(psn) == {"san1": "pan"}, LINK_TIMEOUT,
                 f"{psn.hostname} to drop pan1 from deployment.conf",
                 detail=lambda: f"{admin_hosts(psn)}\n{psn.diagnostics()}")
        assert primary_of(psn) == ("san1", 2)
    assert "Admin node:" not in san.cli("status").stdout
    assert "pan1" not in admin_hosts(san)
    san.stop()
    san.start()
    wait_for(lambda: "Primary:         yes, epoch 2" in san.cli("status").stdout, 60,
             "san1 to serve as the primary again", detail=san.diagnostics)
    assert "Admin node:" not in san.cli("status").stdout
    for psn in psns:
        wait_for(lambda: "connected (primary san1, epoch 2)" in link_line(psn), LINK_TIMEOUT,
                 f"{psn.hostname} back with san1")
        assert admin_hosts(psn) == {"san1": "pan"}
