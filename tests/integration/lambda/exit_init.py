"""A handler module that prints a line and exits at import, without calling the Runtime API."""
import sys

print("exit_init: cannot find the model file /nonexistent/model.onnx", flush=True)
sys.exit(7)
