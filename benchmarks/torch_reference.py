"""PyTorch references for the benchmarks: the same models as jaxtrain's, written the way a
PyTorch user would (eager mode, fused scaled_dot_product_attention), with the same
shapes, the same losses and the same optimizer (global-norm clipping, then AdamW).
"""

import torch
import torch.nn.functional as F
from torch import nn


class TorchVAE(nn.Module):
    """models/vae.py's class-conditional VAE: 794-512-256 encoder, latent 32, the class
    projection added to z, 32-256-512-784 decoder, Bernoulli likelihood."""

    def __init__(self, encoder=(512, 256), decoder=(256, 512), latent=32, classes=10):
        super().__init__()
        self.classes = classes
        self.encoder = mlp([784 + classes, *encoder])
        self.mean = nn.Linear(encoder[-1], latent)
        self.logvar = nn.Linear(encoder[-1], latent)
        self.class_proj = nn.Linear(classes, latent)
        self.decoder = mlp([latent, *decoder])
        self.out = nn.Linear(decoder[-1], 784)

    def forward(self, x, label):
        onehot = F.one_hot(label, self.classes).float()
        h = self.encoder(torch.cat([x, onehot], -1))
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.out(self.decoder(z + self.class_proj(onehot))), mean, logvar


def mlp(widths):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


def vae_loss(model, x, label):
    """Mean negative ELBO in nats per image."""
    logits, mean, logvar = model(x, label)
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = 0.5 * torch.sum(logvar.exp() + mean**2 - 1.0 - logvar)
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

    return step
