"""An L2 logistic regression whose two classes weigh the same whatever their counts, fitted by
LBFGS in torch (already a dependency; scikit-learn is not). The offline naturalness detector
and the probes of bench/end_probe.py fit it on their own features."""

from __future__ import annotations


def fit_balanced_logistic(x, y, l2: float, max_iter: int):
    """(weights, bias) minimising the class-balanced mean log loss (each class's mean, averaged) + l2 * |weights|^2.

    x: float tensor [points, features]; y: float tensor of 0/1 labels, both classes present.
    """
    import torch

    weight = torch.where(y > 0, 0.5 / y.sum(), 0.5 / (len(y) - y.sum()))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = (weight * torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none")).sum()
        value = value + l2 * w.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return w.detach(), b.detach()
