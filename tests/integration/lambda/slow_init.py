"""A handler module whose initialisation (import) takes SLOW_INIT_MS milliseconds."""
import os
import time

time.sleep(int(os.environ.get("SLOW_INIT_MS", "1500")) / 1000.0)
print("slow_init: ready", flush=True)


def handler(event, context):
    return {"pid": os.getpid()}
