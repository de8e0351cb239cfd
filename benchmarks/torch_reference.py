"""PyTorch references for the benchmarks: the same models as jaxtrain's, written the way a
PyTorch user would (eager mode, fused scaled_dot_product_attention), with the same
shapes, the same losses and the same optimizer (global-norm clipping, then AdamW).
"""

import torch
import torch.nn.functional as F
from torch import nn


class TorchVAE(nn.Module):
    """models/vae.py's default class-conditional VAE: 794-512-256 encoder, latent 32, a
    decoder whose every layer also sees the one-hot class (42-512, 522-1024, 1034-784),
    SiLU between layers, a learned Gaussian prior p(z | c) per class, Bernoulli
    likelihood."""

    PRIOR_SCALE = 10.0  # as models/vae.py stores the prior

    def __init__(self, encoder=(512, 256), decoder=(512, 1024), latent=32, classes=10):
        super().__init__()
        self.classes = classes
        self.encoder = mlp([784 + classes, *encoder])
        self.mean = nn.Linear(encoder[-1], latent)
        self.logvar = nn.Linear(encoder[-1], latent)
        widths = [latent, *decoder, 784]
        self.decoder = nn.ModuleList(nn.Linear(a + classes, b)
                                     for a, b in zip(widths[:-1], widths[1:]))
        self.prior_mean = nn.Embedding(classes, latent)
        self.prior_logvar = nn.Embedding(classes, latent)
        nn.init.zeros_(self.prior_mean.weight)
        nn.init.zeros_(self.prior_logvar.weight)

    def forward(self, x, label):
        onehot = F.one_hot(label, self.classes).float()
        h = self.encoder(torch.cat([x, onehot], -1))
        mean, logvar = self.mean(h), self.logvar(h)
        h = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        for i, layer in enumerate(self.decoder):
            h = layer(torch.cat([h, onehot], -1))
            h = F.silu(h) if i < len(self.decoder) - 1 else h
        prior = (self.PRIOR_SCALE * self.prior_mean(label),
                 self.PRIOR_SCALE * self.prior_logvar(label))
        return h, (mean, logvar), prior


def mlp(widths):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers)


def vae_loss(model, x, label):
    """Mean negative ELBO in nats per image."""
    logits, (mean, logvar), (prior_mean, prior_logvar) = model(x, label)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * torch.sum(prior_logvar - logvar - 1.0
                         + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp())
    return (nll + kl) / len(x)


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention, then a GELU MLP; dropout after each."""

    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (y.view(b, t, self.heads, d // self.heads).transpose(1, 2) for y in (q, k, v))
        p = self.dropout if self.training else 0.0
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        h = h.transpose(1, 2).reshape(b, t, d)
        x = x + F.dropout(self.proj(h), self.dropout, self.training)
        h = self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x + F.dropout(h, self.dropout, self.training)


class TorchTransformer(nn.Module):
    """models/transformer.py's decoder-only Transformer: learned positions, pre-LN blocks,
    final LayerNorm, untied output projection."""

    def __init__(self, vocab, out, context, layers=4, d=128, heads=4, dropout=0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, out)

    def forward(self, tokens):
        x = self.drop(self.embed(tokens) + self.pos[: tokens.shape[1]])
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def lm_loss(model, inputs, targets):
    """Mean nats per token."""
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_step(model, loss_fn, lr=1e-3, weight_decay=1e-4, clip=1.0):
    """An eager train step (clip by global norm, AdamW) like jaxtrain's."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def step(*batch):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, *batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    step.optimizer = opt  # for a schedule (benchmarks/torch_char_script.py)
    return step
