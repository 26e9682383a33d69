"""`{{name}}`: the entry of this composition, a CWASI function in Python
(componentize-py). It calls the function `shout` (Rust, in ../shout) by
name with its request, and answers with what `shout` said."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import invoke


class Handler(exports.Handler):
    def handle(self, request: bytes) -> bytes:
        if not request:
            raise Err("the request is empty: send some text, e.g. --data 'hello'")
        try:
            loud = invoke.call("shout", request)
        except Err as e:
            # e.value is a CallError: its code and message.
            raise Err("calling shout: " + e.value.code.name + ": " + e.value.message)
        return loud + b" (shouted by shout in Rust, for {{name}} in Python)"
