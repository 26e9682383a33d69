"""`py_transform`: the Python twin of the core `transform`. It XORs every
byte with 0xA5, then forwards the result to the function named by
`CWASI_NEXT` (if set and non-empty) and answers with its reply; otherwise
it answers with the transformed bytes. A failed forward is the handler's
own error, with the call's code and message."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment, invoke

XOR = bytes(b ^ 0xA5 for b in range(256))


def setting(name: str) -> str:
    # The environment of the instance, read at call time: componentize-py
    # snapshots `os.environ` when it builds the component.
    return dict(environment.get_environment()).get(name, "")


class Handler(exports.Handler):
    def handle(self, request: bytes) -> bytes:
        out = request.translate(XOR)
        target = setting("CWASI_NEXT")
        if not target:
            return out
        try:
            return invoke.call(target, out)
        except Err as e:
            raise Err(f"calling {target}: {e.value.code.name}: {e.value.message}")
