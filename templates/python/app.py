"""`{{name}}`: a CWASI function in Python, a component of the world
`cwasi:function/function` (wit/function.wit) built with componentize-py. It
answers with its request upper-cased.

To call another function by name: `invoke.call("other", data)` (from
`wit_world.imports import invoke`)."""

from componentize_py_types import Err
from wit_world import exports


class Handler(exports.Handler):
    def handle(self, request: bytes) -> bytes:
        # Raising Err is the function's own failure: its caller gets
        # callee-error with the message.
        if not request:
            raise Err("the request is empty: send some text, e.g. --data 'hello'")
        text = request.decode("utf-8", errors="replace").upper()
        return (text + " (upper-cased by {{name}}, in Python)").encode()
