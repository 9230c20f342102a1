"""A stand-in for Hugging Face's `spaces` package (ZeroGPU) for tests: `spaces.GPU`, used bare or with
`duration=`, runs the function as it is and appends "<name> duration=<d>" to the file $SPACES_STUB_LOG,
so a test can see that the app took the ZeroGPU path."""
import functools
import os


def GPU(fn=None, *, duration=60, **_):
    def decorate(f):
        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            with open(os.environ["SPACES_STUB_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{f.__name__} duration={duration}\n")
            return f(*args, **kwargs)
        return wrapper
    return decorate(fn) if fn is not None else decorate
