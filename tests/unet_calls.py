"""What a test sees of the UNets a job runs."""


class UNetCalls:
    """The arguments of every call of the named models' UNets during the block (the latents as ``sample``)."""

    def __init__(self, engine, *names: str):
        self.engine, self.names = engine, names
        self.calls: dict[str, list[dict]] = {name: [] for name in names}

    def __enter__(self):
        self.handles = []
        for name in self.names:
            with self.engine.registry.lease(name) as model:
                self.handles.append(model.pipe.unet.register_forward_pre_hook(
                    lambda module, args, kwargs, name=name: self.calls[name].append({"sample": args[0], **kwargs}),
                    with_kwargs=True))
        return self.calls

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
