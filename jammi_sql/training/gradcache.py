"""Cached in-batch negatives (GradCache): a batch far larger than fits at once, same gradients.

In-batch negatives get better with the batch: each query's softmax runs over every document of
the batch. But a batch of texts embedded with gradients holds every layer's activations of
every text at once. GradCache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", 2021, arXiv:2101.06983) splits the work in three:

1. embed the batch's texts without gradients, ``mini_batch_size`` texts at a time;
2. compute the loss on those embeddings and its gradient with respect to each embedding
   (cheap: the loss is a function of a (texts, D) matrix);
3. embed each mini-batch again, now with gradients, and backpropagate the cached embedding
   gradients through it (``sum(e * g)``), one mini-batch at a time.

By the chain rule the parameter gradients equal those of the plain loss at the full batch;
only one mini-batch's activations live at a time, for about one more forward pass. Dropout
draws the same masks in both passes: each mini-batch's random state is kept and replayed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

Backward = Callable[[float], None]  # backward(scale): gradients of scale * loss, accumulated


def plain(loss: torch.Tensor) -> tuple[torch.Tensor, Backward]:
    """The loss as computed, and its ordinary backward pass."""
    return loss, lambda scale: (loss * scale).backward()


def cached(
    embed: Callable[[np.ndarray], torch.Tensor],
    ids: np.ndarray,
    lengths: np.ndarray,
    mini_batch_size: int,
    loss_of: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, Backward]:
    """``loss_of(embed(ids))`` with a backward pass that holds one mini-batch of activations.

    ``embed(ids)`` embeds texts (n, D) with gradients; ``lengths`` (tokens per text) groups
    texts of similar length into one mini-batch, so little is padded.
    """
    order = np.argsort(-lengths, kind="stable")  # longest first, as the encoder batches
    chunks = [order[i : i + mini_batch_size] for i in range(0, len(order), mini_batch_size)]
    states, parts = [], []
    with torch.no_grad():  # 1. embeddings, no activations kept
        for chunk in chunks:
            states.append(_random_state())
            parts.append(embed(ids[chunk]))
    sorted_emb = torch.cat(parts).requires_grad_()  # (n, D) rows in ``order``
    back = torch.from_numpy(np.argsort(order)).to(sorted_emb.device)
    loss = loss_of(sorted_emb[back])  # rows in ``ids`` order again

    def backward(scale: float) -> None:
        (loss * scale).backward()  # 2. d(loss)/d(embedding), for every text of the batch
        grads = sorted_emb.grad.split([len(c) for c in chunks])
        for chunk, state, grad in zip(chunks, states, grads, strict=True):
            with _replay(state):  # 3. again with gradients, one mini-batch at a time
                emb = embed(ids[chunk])
                (emb * grad).sum().backward()

    return loss, backward


def _random_state() -> tuple[torch.Tensor, list[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return torch.get_rng_state(), cuda


@contextmanager
def _replay(state: tuple[torch.Tensor, list[torch.Tensor]]) -> Iterator[None]:
    """Run with the random state ``state``; the state after is what it was before."""
    cpu, cuda = state
    devices = list(range(len(cuda)))
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
        yield
