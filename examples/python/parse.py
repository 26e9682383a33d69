"""`parse`: an example CWASI function written in Python, built into a
component with componentize-py (docs/guest-python.md).

It reads a record `name, year, role` and answers with one `key=value` line
per field. If `CWASI_NEXT` names a function, it passes the lines on and
answers with that function's reply. A malformed record is the handler's
own error: its caller gets `callee-error` with the message."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment, invoke


def setting(name: str) -> str:
    # Read at call time: `os.environ` is a snapshot taken at build time.
    return dict(environment.get_environment()).get(name, "")


class Handler(exports.Handler):
    def handle(self, request: bytes) -> bytes:
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError:
            raise Err("the record is not UTF-8")
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != 3 or not fields[1].isdigit():
            raise Err(f"expected 'name, year, role', got {text!r}")
        name, year, role = fields
        lines = f"name={name}\nyear={year}\nrole={role}".encode()
        target = setting("CWASI_NEXT")
        if not target:
            return lines
        try:
            return invoke.call(target, lines)
        except Err as e:
            raise Err(f"calling {target}: {e.value.code.name}: {e.value.message}")
