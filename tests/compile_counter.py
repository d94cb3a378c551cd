"""``CompileCounter``: counts XLA compilations, for tests that promise "no recompile"."""

from jax._src import dispatch, monitoring


class CompileCounter:
    """Counts XLA backend compilations while installed (jax's own monitoring event)."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == dispatch.BACKEND_COMPILE_EVENT:
            self.count += 1

    def __enter__(self):
        monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        monitoring.unregister_event_duration_listener(self)
