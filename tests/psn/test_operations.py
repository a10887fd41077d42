"""Operations on real executables (issue 8): what an administrator sees on
the PAN when a PSN's services fail, when its CA certificates near their
end, and what `pan ca certs --verify` and `pan log-level` do.

The CA service killed under `psn run`: EST follows it down (8084 closed),
the supervisor restarts both, and once a restart takes longer than the
grace time (the supervisor backs off 1 s, 2 s, 4 s ... on crashes in a
row) the PAN shows "CA Service Down" and "EST Service Down" for the PSN,
cleared by themselves when both are back."""

import os
import re
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from iselab import LINK_TIMEOUT, lab, tail, wait_for  # noqa: E402,F401
import test_est_psn as est  # noqa: E402
from test_replication import running_psn  # noqa: E402

# Crashes in a row before the backoff (1 s, 2 s, 4 s, 8 s ...) is sure to
# outlast the PSN's 3 s grace time; one more for a slow machine.
CRASHES_MAX = 5


def proc_pids(node, name):
    """Pids of the daemon's processes named name (/proc/PID/comm)."""
    out = []
    for pid in node.group_pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                out.append(pid)
        except OSError:
            pass
    return out


def alarm_rows(pan, name, host, all=False):
    return [ln for ln in pan.alarms(all=all).splitlines()[1:] if name in ln and host in ln]


def test_ca_killed_est_follows_alarm_raised_and_cleared(lab):
    pan, psn = running_psn(lab)
    e = est.Est(lab, psn, psn.address)
    assert e.request("cacerts")[0] == 200
    assert not alarm_rows(pan, "Service Down", "psn1", all=True)

    seen_active = False
    for crash in range(1, CRASHES_MAX + 1):
        ca_pid = wait_for(lambda: proc_pids(psn, "ca-service"), 60, "the CA service",
                          detail=lambda: tail(psn.log_path))[0]
        os.kill(ca_pid, signal.SIGKILL)
        # EST follows CA: the EST server is stopped, 8084 closes.
        wait_for(lambda: not est.tcp_listening(psn.address.ip), 30,
                 f"8084 to close after crash {crash}", detail=lambda: tail(psn.log_path))

        def active():
            return (alarm_rows(pan, "CA Service Down", "psn1")
                    and alarm_rows(pan, "EST Service Down", "psn1"))

        def back():
            c = proc_pids(psn, "ca-service")
            return c and c[0] != ca_pid and est.tcp_listening(psn.address.ip)

        def settled():
            nonlocal seen_active
            if not seen_active and active():
                seen_active = True
                # Raised while the services are down.
                st = psn.status().stdout
                assert not re.search(r"^Certificate Authority Service\s+running", st, re.M), st
            return back()
        wait_for(settled, 90, f"the CA and EST services back after crash {crash}",
                 detail=lambda: tail(psn.log_path))
        if alarm_rows(pan, "CA Service Down", "psn1", all=True):
            break
    else:
        raise AssertionError(f"no CA Service Down alarm after {CRASHES_MAX} crashes:\n"
                             + pan.alarms(all=True) + tail(psn.log_path))
    assert crash >= 2, "the first restart (1 s) is within the grace time"

    # Raised with node, severity and text; cleared by itself once back.
    wait_for(lambda: not alarm_rows(pan, "Service Down", "psn1"), LINK_TIMEOUT,
             "the service alarms to clear", detail=lambda: pan.alarms() + tail(psn.log_path))
    hist = alarm_rows(pan, "Service Down", "psn1", all=True)
    ca_row = [ln for ln in hist if "CA Service Down" in ln]
    est_row = [ln for ln in hist if "EST Service Down" in ln]
    assert len(ca_row) == 1 and len(est_row) == 1, hist
    for row in ca_row + est_row:
        assert " critical " in row, row
        # The CLEARED column holds a time, not "-".
        assert re.search(r"\d\d:\d\d:\d\d\S*\s+\S+\s+psn1\s+.*Service Down\s+\d{4}-", row), row
    assert "Certificate Authority Service on psn1" in ca_row[0], ca_row
    assert "EST Service on psn1" in est_row[0], est_row
    assert "alarm cleared" in psn.log_text() or "running again" in psn.log_text()
    assert e.request("cacerts")[0] == 200
    st = psn.status().stdout
    assert re.search(r"^Certificate Authority Service\s+running\s+\d+", st, re.M), st
    assert re.search(r"^EST Service\s+running\s+\d+", st, re.M), st
