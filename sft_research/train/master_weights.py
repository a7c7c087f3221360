"""Float32 master weights for low-precision parameters, held by the optimizer.

A bf16 weight cannot take an update smaller than half a unit in its last place: about 6e-5 at |w| = 0.02, while
AdamW at lr 5e-7 moves a weight by about 5e-7 per step. Stepped directly, 99% of such a model's weights never change
(the updates round away). DeepSpeed's bf16 optimizer and mixed precision both keep a float32 copy of every trained
weight; :class:`MasterWeights` does the same for any torch optimizer: the step runs on float32 masters, which are then
rounded into the bf16 parameters that the forward and backward passes use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeights(torch.optim.Optimizer):
    """Runs ``make_optimizer`` on float32 master copies of the low-precision parameters among ``params`` (float32
    ones are stepped as they are). ``params`` is a list of tensors or of parameter groups (dicts with ``params`` and
    their own hyperparameters, such as weight decay exemptions); ``make_optimizer`` gets the same groups over the
    masters.

    Its ``param_groups`` hold the model's parameters, so that learning-rate schedulers, ``zero_grad`` and FSDP's
    optimizer state dicts see the model's parameters; the hyperparameters of each group are handed to the inner
    optimizer's same group at every step. The masters are part of the state dict (``master`` beside the inner
    optimizer's state of each parameter), so a resumed run continues from them, not from the rounded weights.
    """

    def __init__(self, params, make_optimizer: Callable[[list[dict]], torch.optim.Optimizer]):
        groups = list(params)
        groups = [{**group, "params": list(group["params"])} for group in groups] if isinstance(groups[0], dict) else [{"params": groups}]
        masters = [[p.detach().float().clone() if p.dtype in LOW_PRECISION else p for p in group["params"]] for group in groups]
        self.masters = [master for group in masters for master in group]
        self.inner = make_optimizer([{**group, "params": tensors} for group, tensors in zip(groups, masters)])
        super().__init__(groups, self.inner.defaults)
        for outer, inner in zip(self.param_groups, self.inner.param_groups):
            outer.update({k: v for k, v in inner.items() if k != "params"})

    def updated_tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, the tensor the optimizer updates for it): its float32 master, or the parameter itself."""
        return list(zip([p for group in self.param_groups for p in group["params"]], self.masters))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for outer, inner in zip(self.param_groups, self.inner.param_groups):
            inner.update({k: v for k, v in outer.items() if k != "params"})
        lowered = []
        for param, master in self.updated_tensors():
            if master is not param:
                master.grad = None if param.grad is None else param.grad.float()
                lowered.append((param, master))
        self.inner.step()
        for param, master in lowered:
            param.copy_(master)
            master.grad = None
        return loss

    def state_dict(self) -> dict:
        state = self.inner.state_dict()
        for index, (param, master) in enumerate(self.updated_tensors()):
            if master is not param:
                state["state"].setdefault(index, {})["master"] = master
        state["param_groups"] = [
            {**{k: v for k, v in outer.items() if k != "params"}, "params": inner["params"]}
            for outer, inner in zip(self.param_groups, state["param_groups"])
        ]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        inner_state = {index: dict(values) for index, values in state_dict["state"].items()}
        masters = {index: values.pop("master") for index, values in inner_state.items() if "master" in values}
        self.inner.load_state_dict({"state": inner_state, "param_groups": state_dict["param_groups"]})
        for outer, saved in zip(self.param_groups, state_dict["param_groups"]):
            outer.update({k: v for k, v in saved.items() if k != "params"})
        for index, value in masters.items():
            self.masters[int(index)].copy_(value)


def updated_tensors(optimizer: torch.optim.Optimizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, the tensor the optimizer updates for it) for every trained parameter: a float32 master where
    :class:`MasterWeights` keeps one, else the parameter itself."""
    if isinstance(optimizer, MasterWeights):
        return optimizer.updated_tensors()
    return [(p, p) for group in optimizer.param_groups for p in group["params"]]
