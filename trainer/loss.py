"""The token cross-entropy of the output projection (`linear_cross_entropy`), which
`trainer.model.Transformer` computes from its last hidden states: on CPU in float32
a chunked loss that never holds the whole logits, elsewhere `F.cross_entropy`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logits the CPU loss holds at once: about 2^22 float32 (16 MiB, plus as much scratch;
# 128 rows at vocabulary 32000), in whole 64-row blocks. Small enough to stay in cache
# from the matmul to the softmax, large enough for efficient matmuls: at dim 192, 128
# and 256 rows are equally fast, 64 rows 5% and 512 rows 13% slower.
LOSS_CHUNK_ELEMENTS = 2**22


def _chunked_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                           grads: bool) -> tuple[torch.Tensor, torch.Tensor | None,
                                                 torch.Tensor | None]:
    """sum_i CE(h_i weight^T, targets_i) over the rows with target != -100, a chunk of
    rows at a time; with `grads`, also its gradients with respect to h and weight.

    d loss / d logits = exp(logits - logsumexp) - onehot(target), zero on ignored
    rows (the probabilities as exp of the log-softmax, as in `F.cross_entropy`'s
    backward), made in place in the chunk's logits and multiplied into both
    gradients at once.
    """
    valid = targets != -100
    t = targets.where(valid, 0).unsqueeze(-1)
    rows = max(64, LOSS_CHUNK_ELEMENTS // weight.shape[0] // 64 * 64)
    buf = h.new_empty(2, min(rows, h.shape[0]), weight.shape[0])  # logits, exp scratch
    grad_h = torch.empty_like(h) if grads else None
    grad_w = torch.empty_like(weight) if grads else None
    loss = h.new_zeros(())
    for s in range(0, h.shape[0], rows):
        hc, tc, vc = h[s:s + rows], t[s:s + rows], valid[s:s + rows, None]
        logits = torch.mm(hc, weight.t(), out=buf[0, :len(hc)])
        m = logits.amax(-1, keepdim=True)
        lse = m + torch.sub(logits, m, out=buf[1, :len(hc)]).exp_().sum(-1, keepdim=True).log()
        loss += ((lse - logits.gather(-1, tc)) * vc).sum()
        if grads:
            probs = logits.sub_(lse).exp_().mul_(vc)
            probs.scatter_add_(-1, tc, -vc.to(probs.dtype))
            torch.mm(probs, weight, out=grad_h[s:s + rows])
            if s == 0:
                torch.mm(probs.t(), hc, out=grad_w)
            else:
                grad_w.addmm_(probs.t(), hc)
    return loss, grad_h, grad_w


class _LinearCrossEntropy(torch.autograd.Function):
    """`_chunked_cross_entropy` as an autograd function: the gradients are made in the
    forward pass; the backward only scales them by the loss's incoming gradient."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss, grad_h, grad_w = _chunked_cross_entropy(h, weight, targets, grads=True)
        ctx.save_for_backward(grad_h, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        grad_h, grad_w = ctx.saved_tensors
        # In place: no new buffers; a second backward through the graph raises
        # (autograd checks the saved tensors' versions).
        return grad_h.mul_(grad_loss), grad_w.mul_(grad_loss), None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         reduction: str = "mean") -> torch.Tensor:
    """Token cross-entropy of the logits `h @ weight.T`, in nats: the value of
    `F.cross_entropy(F.linear(h, weight).float(), targets, ignore_index=-100,
    reduction=reduction)`.

    Args:
        h: [N, dim] final hidden states; weight: [vocab_size, dim] output projection.
        targets: int64 [N]; -100 marks rows to ignore.
        reduction: "sum", or "mean" over the non-ignored rows (nan when there are none).
    Returns: float32 0-dim tensor.
    Raises:
        ValueError: another reduction.

    On CPU in float32 (eager, no autocast) it never holds the [N, vocab_size]
    logits whole (`_chunked_cross_entropy`, as Liger-Kernel's fused linear
    cross-entropy): eager `F.cross_entropy` writes the logits, their log-softmax
    and, in the backward, a one-hot and a softmax gradient, four fresh [N, V]
    buffers, which dominate a small model's step at LLaMA's 32000-word vocabulary.
    Projection and loss, forward and backward, are 1.4x faster at N = 1024,
    dim 192 on one thread (tests/bench/bench_trainer.py has the whole step).
    Elsewhere (GPU, autocast, torch.compile) it is `F.cross_entropy` over the
    float32 logits.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction {reduction!r}, expected 'sum' or 'mean'")
    if (h.device.type == "cpu" and h.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            loss = _LinearCrossEntropy.apply(h, weight, targets)
        else:
            loss = _chunked_cross_entropy(h, weight, targets, grads=False)[0]
    else:
        loss = F.cross_entropy(F.linear(h, weight).float(), targets, ignore_index=-100,
                               reduction="sum")
    return loss / (targets != -100).sum() if reduction == "mean" else loss
