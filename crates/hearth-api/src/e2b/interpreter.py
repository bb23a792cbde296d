# hearth's code interpreter kernel: one per context, run as `python3 -u -c` in the guest.
# Requests come one JSON line each on stdin ({"code": ..., "env_vars": {...}}); every event
# of an execution goes out as a JSON line on the original stdout, in the shape of E2B's
# /execute stream, ending with {"type": "end_of_execution"}. Names defined by one execution
# stay for the next. Writes to fd 1 by child processes go to stderr instead, so they cannot
# corrupt the event stream.
import ast, io, json, os, sys, time, traceback

_channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
os.dup2(2, 1)


def _emit(event):
    _channel.write(json.dumps(event) + "\n")
    _channel.flush()


class _Stream(io.TextIOBase):
    """Output goes out by whole lines, as Jupyter's does: `print` writes its newline apart."""

    def __init__(self, kind):
        self._kind = kind
        self._buffer = ""

    def writable(self):
        return True

    def write(self, text):
        self._buffer += text
        if "\n" in self._buffer:
            lines, _, self._buffer = self._buffer.rpartition("\n")
            self._send(lines + "\n")
        return len(text)

    def flush(self):
        if self._buffer:
            self._send(self._buffer)
            self._buffer = ""

    def _send(self, text):
        _emit({"type": self._kind, "text": text, "timestamp": time.time_ns()})


def _flush():
    sys.stdout.flush()
    sys.stderr.flush()


def _run(code, namespace):
    tree = ast.parse(code, "<cell>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<cell>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<cell>", "eval"), namespace)
        if value is not None:
            _emit({"type": "result", "text": repr(value), "is_main_result": True})


def _cell_traceback(error):
    """The traceback from the cell's own frames on: the driver's are noise to the user."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def _main():
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.stdout, sys.stderr = _Stream("stdout"), _Stream("stderr")
    count = 0
    while True:
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # an interrupt that came after its cell had ended
            continue
        if not line:
            return
        request = json.loads(line)
        env = request.get("env_vars") or {}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        count += 1
        try:
            _run(request["code"], namespace)
        except BaseException as error:  # KeyboardInterrupt and SystemExit end a cell, not us
            _flush()
            _emit({
                "type": "error",
                "name": type(error).__name__,
                "value": str(error),
                "traceback": _cell_traceback(error),
            })
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _flush()
        _emit({"type": "number_of_executions", "execution_count": count})
        _emit({"type": "end_of_execution"})


_main()
