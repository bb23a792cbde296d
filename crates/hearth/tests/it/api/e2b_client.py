# The E2B SDKs (e2b and e2b-code-interpreter from PyPI, unmodified) against `hearth serve
# --e2b-listen`: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY come from the test. Each check
# fails with a message saying what differed; "ok" on the last line means all passed.
import datetime
import os
import sys
import time

import httpx

from e2b import (
    CommandExitException,
    FileType,
    PtySize,
    Sandbox,
    SandboxQuery,
    SandboxState,
)
from e2b.exceptions import (
    AuthenticationException,
    NotFoundException,
    SandboxException,
    TimeoutException,
)
from e2b_code_interpreter import Sandbox as CodeSandbox


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def commands(sbx):
    result = sbx.commands.run("echo hello; echo oops >&2")
    check(result.exit_code == 0, f"exit code {result.exit_code}")
    check(result.stdout == "hello\n", f"stdout {result.stdout!r}")
    check(result.stderr == "oops\n", f"stderr {result.stderr!r}")

    try:
        sbx.commands.run("echo bad >&2; exit 3")
        raise AssertionError("a failing command did not raise")
    except CommandExitException as e:
        check(e.exit_code == 3, f"exit code of a failing command {e.exit_code}")
        check(e.stderr == "bad\n", f"stderr of a failing command {e.stderr!r}")
    check(sbx.commands.run("id -u", user="root").stdout == "0\n", "user=root")
    check(sbx.commands.run("id -u", user="user").stdout == "1000\n", "user=user")

    result = sbx.commands.run("echo $GREETING; pwd", envs={"GREETING": "hi there"}, cwd="/tmp")
    check(result.stdout == "hi there\n/tmp\n", f"envs and cwd: {result.stdout!r}")

    streamed = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=streamed.append)
    check("".join(streamed) == "1\n2\n3\n", f"streamed stdout {streamed!r}")

    handle = sbx.commands.run("read line; echo got $line; sleep 600", background=True, stdin=True)
    check(handle.pid > 0, f"pid {handle.pid}")
    listed = [p.pid for p in sbx.commands.list()]
    check(handle.pid in listed, f"{handle.pid} not in {listed}")
    sbx.commands.send_stdin(handle.pid, "abc\n")
    deadline = time.time() + 30
    seen = []
    for stdout, _, _ in handle:
        if stdout:
            seen.append(stdout)
        if "got abc" in "".join(seen) or time.time() > deadline:
            break
    check("got abc\n" in "".join(seen), f"stdin round trip: {seen!r}")
    check(sbx.commands.kill(handle.pid), "kill of a running process")
    try:
        handle.wait()
        raise AssertionError("a killed command did not raise")
    except CommandExitException as e:
        check(e.exit_code == -1, f"killed exit code {e.exit_code}")
    check(not sbx.commands.kill(handle.pid), "kill of a gone process says False")

    waited = sbx.commands.run("sleep 1; echo done", background=True)
    check(waited.wait().stdout == "done\n", "background wait")


def pty(sbx):
    out = bytearray()
    terminal = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(terminal.pid, b"stty size; exit 7\n")
    try:
        terminal.wait(on_pty=out.extend)
        raise AssertionError("a PTY shell that exits 7 did not raise")
    except CommandExitException as e:
        check(e.exit_code == 7, f"PTY exit code {e.exit_code}")
    check(b"24 80" in out, f"PTY size not seen in {bytes(out)!r}")

    terminal = sbx.pty.create(PtySize(rows=10, cols=40))
    sbx.pty.resize(terminal.pid, PtySize(rows=33, cols=99))
    sbx.pty.send_stdin(terminal.pid, b"stty size; exit\n")
    out.clear()
    terminal.wait(on_pty=out.extend)
    check(b"33 99" in out, f"resized PTY size not seen in {bytes(out)!r}")


def files(sbx):
    info = sbx.files.write("/tmp/e2b/dir/hello.txt", "hello file")
    check(info.path == "/tmp/e2b/dir/hello.txt", f"write info {info}")
    check(sbx.files.read("/tmp/e2b/dir/hello.txt") == "hello file", "read back text")
    payload = bytes(range(256)) * 1024
    sbx.files.write("/tmp/e2b/blob.bin", payload)
    check(sbx.files.read("/tmp/e2b/blob.bin", format="bytes") == payload, "binary round trip")
    check(sbx.commands.run("cat /tmp/e2b/dir/hello.txt").stdout == "hello file", "file seen by a command")

    text = "héllo wörld ✓\n"
    sbx.files.write("/tmp/e2b/dir/ünïcødé.txt", text)
    check(sbx.files.read("/tmp/e2b/dir/ünïcødé.txt") == text, "non-ASCII name and content")
    check(sbx.commands.run("cat /tmp/e2b/dir/ünïcødé.txt").stdout == text, "non-ASCII via a command")

    names = sorted(e.name for e in sbx.files.list("/tmp/e2b"))
    check(names == ["blob.bin", "dir"], f"list {names}")
    deep = sorted(e.path for e in sbx.files.list("/tmp/e2b", depth=2))
    check("/tmp/e2b/dir/hello.txt" in deep, f"list depth 2 {deep}")
    check(sbx.files.exists("/tmp/e2b/blob.bin"), "exists")
    check(not sbx.files.exists("/tmp/e2b/nothing"), "exists of a missing file")
    check(sbx.files.get_info("/tmp/e2b/blob.bin").size == len(payload), "stat size")

    check(sbx.files.make_dir("/tmp/e2b/new"), "make_dir of a new dir")
    check(not sbx.files.make_dir("/tmp/e2b/new"), "make_dir of an existing dir says False")
    moved = sbx.files.rename("/tmp/e2b/dir/hello.txt", "/tmp/e2b/new/moved.txt")
    check(moved.path == "/tmp/e2b/new/moved.txt", f"rename answer {moved}")
    check(sbx.files.read("/tmp/e2b/new/moved.txt") == "hello file", "read after rename")
    sbx.files.remove("/tmp/e2b/new")
    check(not sbx.files.exists("/tmp/e2b/new"), "remove of a dir")
    try:
        sbx.files.read("/tmp/e2b/nothing")
        raise AssertionError("reading a missing file did not raise")
    except NotFoundException:
        pass

    sbx.files.write("/tmp/e2b/owned.txt", "12345")
    # The test image's busybox has no chmod, chown or ln; it has python3.
    sbx.commands.run(
        "python3 -c 'import os; p = \"/tmp/e2b/owned.txt\"; os.chmod(p, 0o640); "
        "os.chown(p, 1000, 1000); os.symlink(p, \"/tmp/e2b/link\")'",
        user="root",
    )
    info = sbx.files.get_info("/tmp/e2b/owned.txt")
    check(info.type == FileType.FILE and info.size == 5, f"file info {info}")
    check(info.mode & 0o777 == 0o640 and info.permissions == "-rw-r-----", f"mode {info}")
    check(info.owner == "user" and info.group == "user", f"owner and group {info}")
    age = abs(datetime.datetime.now(datetime.timezone.utc) - info.modified_time)
    check(age < datetime.timedelta(hours=1), f"modified time {info.modified_time}")
    check(info.symlink_target is None, f"a file's symlink target {info}")
    link = sbx.files.get_info("/tmp/e2b/link")
    check(link.type == FileType.SYMLINK, f"link type {link}")
    check(link.symlink_target == "/tmp/e2b/owned.txt", f"link target {link}")
    check(sbx.files.get_info("/tmp").owner == "root", "root's dir")
    sbx.files.remove("/tmp/e2b/link")
    sbx.files.remove("/tmp/e2b/owned.txt")

    watcher = sbx.files.watch_dir("/tmp/e2b")
    sbx.files.write("/tmp/e2b/watched.txt", "x")
    events = []
    deadline = time.time() + 30
    while time.time() < deadline and not any(e.name == "watched.txt" for e in events):
        time.sleep(0.5)
        events += watcher.get_new_events()
    watcher.stop()
    check(any(e.name == "watched.txt" for e in events), f"watch events {events}")


def interpreter(sbx):
    check(sbx.run_code("x = 41").error is None, "assignment")
    execution = sbx.run_code("x + 1")
    check(execution.text == "42", f"stateful result {execution.text!r} {execution.error}")
    printed = []
    execution = sbx.run_code("print('hi'); import sys; print('err', file=sys.stderr)", on_stdout=printed.append)
    check(execution.logs.stdout == ["hi\n"], f"stdout {execution.logs.stdout}")
    check(execution.logs.stderr == ["err\n"], f"stderr {execution.logs.stderr}")
    check(printed and printed[0].line == "hi\n", f"on_stdout {printed}")
    execution = sbx.run_code("1 / 0")
    check(execution.error is not None and execution.error.name == "ZeroDivisionError", f"error {execution.error}")
    check("ZeroDivisionError" in execution.error.traceback, "traceback")

    # A client that gives up interrupts its cell; the context keeps its names.
    try:
        sbx.run_code("while True: pass", timeout=3)
        raise AssertionError("an endless cell did not time out")
    except TimeoutException:
        pass
    check(sbx.run_code("x").text == "41", "names survive an interrupted cell")
    # A cell that ignores the interrupt holds its context until a restart ends the kernel.
    stubborn = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    try:
        sbx.run_code(stubborn, timeout=3)
        raise AssertionError("an endless cell did not time out")
    except TimeoutException:
        pass
    sbx.restart_code_context("default")
    check(sbx.run_code("6 * 7").text == "42", "the default context after a restart")

    context = sbx.create_code_context()
    sbx.run_code("y = 'in context'", context=context)
    check(sbx.run_code("y", context=context).text == "'in context'", "context keeps its names")
    check(sbx.run_code("y").error.name == "NameError", "the default context does not see them")
    check(context.id in [c.id for c in sbx.list_code_contexts()], "context listed")
    sbx.restart_code_context(context)
    check(sbx.run_code("y", context=context).error.name == "NameError", "restart clears names")
    sbx.remove_code_context(context)
    check(context.id not in [c.id for c in sbx.list_code_contexts()], "context removed")


def control(sbx):
    info = sbx.get_info()
    check(info.sandbox_id == sbx.sandbox_id, f"info {info}")
    check(info.metadata.get("purpose") == "test", f"metadata {info.metadata}")
    sbx.set_timeout(600)
    listed = [s.sandbox_id for s in Sandbox.list().next_items()]
    check(sbx.sandbox_id in listed, f"{sbx.sandbox_id} not in {listed}")
    again = Sandbox.connect(sbx.sandbox_id)
    check(again.commands.run("echo again").stdout == "again\n", "connect")

    try:
        Sandbox.connect("nosuchsandbox")
        raise AssertionError("connecting to an unknown sandbox did not raise")
    except (NotFoundException, SandboxException):
        pass


def metrics(sbx):
    samples = sbx.get_metrics()
    check(len(samples) == 1, f"metrics {samples}")
    m = samples[0]
    check(m.cpu_count >= 1, f"cpu count {m}")
    check(0 <= m.cpu_used_pct <= 100, f"cpu use {m}")
    check(0 < m.mem_used <= m.mem_total, f"memory {m}")
    check(0 <= m.mem_cache <= m.mem_total, f"cache {m}")
    check(0 <= m.disk_used <= m.disk_total, f"disk {m}")
    age = abs(datetime.datetime.now(datetime.timezone.utc) - m.timestamp)
    check(age < datetime.timedelta(minutes=5), f"metric timestamp {m.timestamp}")


def listed(state):
    query = SandboxQuery(state=[state])
    return [s.sandbox_id for s in Sandbox.list(query=query).next_items()]


def pause_resume(sbx):
    sbx.files.write("/tmp/e2b/kept.txt", "kept across a pause")
    # A command's process ends with the pause (see docs/e2b.md); one it detached from itself
    # is part of the saved machine.
    handle = sbx.commands.run("sleep 1000", background=True)
    detached = sbx.commands.run(
        "python3 -c 'import subprocess as s; print(s.Popen([\"sleep\", \"1001\"], "
        "start_new_session=True, stdin=s.DEVNULL, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)'"
    ).stdout.strip()
    check(detached.isdigit(), f"detached pid {detached!r}")
    sbx.run_code("before_pause = 7")

    check(sbx.pause(), "pause of a running sandbox")
    check(not sbx.pause(), "a second pause says False")
    check(sbx.sandbox_id in listed(SandboxState.PAUSED), "listed as paused")
    check(sbx.sandbox_id not in listed(SandboxState.RUNNING), "not listed as running")
    check(sbx.get_info().state == SandboxState.PAUSED, "get_info says paused")
    check(not sbx.is_running(), "is_running of a paused sandbox")
    check(sbx.get_metrics() == [], "a paused sandbox has no metrics")

    resumed = Sandbox.connect(sbx.sandbox_id)
    check(resumed.sandbox_id == sbx.sandbox_id, f"resumed id {resumed.sandbox_id}")
    check(resumed._envd_access_token == sbx._envd_access_token, "the token stays")
    check(sbx.get_info().state == SandboxState.RUNNING, "get_info says running")
    check(sbx.sandbox_id in listed(SandboxState.RUNNING), "listed as running")
    check(sbx.sandbox_id not in listed(SandboxState.PAUSED), "no longer listed as paused")
    check(resumed.files.read("/tmp/e2b/kept.txt") == "kept across a pause", "file kept")
    # The object made before the pause goes on working: same id, same token.
    check(sbx.files.read("/tmp/e2b/kept.txt") == "kept across a pause", "old handle")
    cmdline = resumed.commands.run(f"cat /proc/{detached}/cmdline").stdout
    check(cmdline.split("\0")[:2] == ["sleep", "1001"], f"the detached process runs on: {cmdline!r}")
    pids = [p.pid for p in resumed.commands.list()]
    check(handle.pid not in pids, f"the ended command is not listed: {pids}")
    gone = resumed.commands.run(f"test -d /proc/{handle.pid} && echo alive || echo gone").stdout
    print(f"after resume, the pause's command {handle.pid} is {gone.strip()}", file=sys.stderr)
    again = resumed.commands.run("sleep 1000", background=True)
    check(again.pid in [p.pid for p in resumed.commands.list()], "a new command is listed")
    again.kill()
    # The interpreter's driver was a process too: the context starts afresh.
    check(sbx.run_code("6 * 7").text == "42", "run_code after a resume")
    metrics(resumed)
    check(Sandbox.connect(sbx.sandbox_id).sandbox_id == sbx.sandbox_id, "connect to it running")


def paused_kill():
    # A warm start (the template exists by now) and then a resumed sandbox pause too.
    sbx = Sandbox.create(template="code-interpreter-v1")
    check(sbx.pause(), "pause of a warm-started sandbox")
    sbx.connect()
    check(sbx.commands.run("echo back").stdout == "back\n", "instance connect resumes")
    check(sbx.pause(), "pause of a resumed sandbox")
    check(Sandbox.kill(sbx.sandbox_id), "kill of a paused sandbox")
    check(not Sandbox.kill(sbx.sandbox_id), "a second kill of it says False")
    check(sbx.sandbox_id not in listed(SandboxState.PAUSED), "a killed sandbox is not listed")
    try:
        Sandbox.connect(sbx.sandbox_id)
        raise AssertionError("connecting to a killed paused sandbox did not raise")
    except (NotFoundException, SandboxException):
        pass


def bad_credentials(sbx):
    try:
        Sandbox.list(api_key="hearth_wrong").next_items()
        raise AssertionError("a wrong API key was accepted")
    except AuthenticationException:
        pass
    url = os.environ["E2B_SANDBOX_URL"]
    for token in [None, "forged", sbx._envd_access_token + "x"]:
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
        if token is not None:
            headers["X-Access-Token"] = token
        files = httpx.get(f"{url}/files", params={"path": "/tmp/e2b/blob.bin"}, headers=headers)
        check(files.status_code == 401, f"GET /files with token {token!r}: {files.status_code}")
        rpc = httpx.post(
            f"{url}/process.Process/List",
            json={},
            headers={**headers, "Content-Type": "application/json"},
        )
        check(rpc.status_code == 401, f"List with token {token!r}: {rpc.status_code}")
        check(rpc.json()["code"] == "unauthenticated", f"List error {rpc.text}")
    headers = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sbx._envd_access_token,
    }
    files = httpx.get(f"{url}/files", params={"path": "/tmp/e2b/blob.bin"}, headers=headers)
    check(files.status_code == 200, f"GET /files with the real token: {files.status_code}")


def without_python(template):
    sbx = CodeSandbox.create(template=template)
    try:
        execution = sbx.run_code("1 + 1")
        check(execution.error is not None, "run_code without python3 gave no error")
        check(execution.error.name == "KernelError", f"error name {execution.error.name}")
        check("python3" in execution.error.value, f"error value {execution.error.value}")
    finally:
        sbx.kill()


def main():
    without_python(sys.argv[1])
    sbx = CodeSandbox.create(template="code-interpreter-v1", metadata={"purpose": "test"}, timeout=300)
    try:
        commands(sbx)
        pty(sbx)
        files(sbx)
        interpreter(sbx)
        control(sbx)
        bad_credentials(sbx)
        metrics(sbx)
        pause_resume(sbx)
    finally:
        killed = sbx.kill()
    check(killed, "kill of a running sandbox")
    check(not Sandbox.kill(sbx.sandbox_id), "a second kill says False")
    paused_kill()
    print("ok")


if __name__ == "__main__":
    sys.exit(main())
