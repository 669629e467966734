"""Soft actor-critic over action chunks (a small torch implementation).

One decision is a chunk of H actions: the actor maps the low-dimensional state to a squashed
Gaussian over the whole chunk (H x action dim), the twin critics score (state, whole chunk), and
the target is ``R + gamma**H * (min Q'(s', a') - alpha * log pi(a'|s'))`` where ``R`` is the
chunk's reward from :class:`~sole_r1_ros.learner.replay.RelabelBuffer`. The entropy temperature
is tuned automatically (target entropy = -chunk dimension).

Why not a library: Stable-Baselines3 and CleanRL step a gymnasium env themselves and take the
reward from ``env.step``, one action at a time; here a decision is a chunk, its reward arrives
late from another process (or never) and a transition may only be sampled once it is labelled.
That is the replay buffer's and the loop's job, and the SAC update left over is ~100 lines.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sole_r1_ros.learner.replay import Batch

LOG_STD_RANGE = (-5.0, 2.0)


@dataclass(frozen=True)
class SacSettings:
    horizon: int = 4
    hidden: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    batch_size: int = 128
    init_alpha: float = 0.1


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, n_out))


class ChunkActor(nn.Module):
    """State -> squashed Gaussian over a flattened chunk of actions in [-1, 1]."""

    def __init__(self, obs_dim: int, chunk_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(obs_dim, 2 * chunk_dim, hidden)
        self.chunk_dim = chunk_dim

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(*LOG_STD_RANGE)
        if deterministic:
            return torch.tanh(mean), torch.zeros(obs.shape[0], device=obs.device)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp


class ChunkCritic(nn.Module):
    """Twin Q over (state, whole chunk)."""

    def __init__(self, obs_dim: int, chunk_dim: int, hidden: int) -> None:
        super().__init__()
        self.q1 = _mlp(obs_dim + chunk_dim, 1, hidden)
        self.q2 = _mlp(obs_dim + chunk_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, chunk], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class ChunkSAC:
    """The agent: :meth:`act` for a chunk, :meth:`update` on a sampled :class:`Batch`."""

    def __init__(self, obs_dim: int, action_dim: int, settings: SacSettings | None = None, seed: int = 0) -> None:
        self.s = settings or SacSettings()
        torch.manual_seed(seed)
        self.action_dim = action_dim
        self.chunk_dim = action_dim * self.s.horizon
        self.actor = ChunkActor(obs_dim, self.chunk_dim, self.s.hidden)
        self.critic = ChunkCritic(obs_dim, self.chunk_dim, self.s.hidden)
        self.target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(self.s.init_alpha), requires_grad=True)
        self.target_entropy = -float(self.chunk_dim)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=self.s.lr)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=self.s.lr)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=self.s.lr)
        self.updates = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """A chunk (H x action dim) for one observation."""
        with torch.no_grad():
            a, _ = self.actor(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic)
        return a[0].numpy().reshape(self.s.horizon, self.action_dim)

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of critic, actor and temperature; returns the losses."""
        obs = torch.as_tensor(batch.obs)
        act = torch.as_tensor(batch.actions).reshape(len(batch.obs), -1)
        rew = torch.as_tensor(batch.rewards)
        nxt = torch.as_tensor(batch.next_obs)
        term = torch.as_tensor(batch.terminals)
        alpha = self.log_alpha.exp().detach()
        discount = self.s.gamma ** self.s.horizon
        with torch.no_grad():
            a2, logp2 = self.actor(nxt)
            q1t, q2t = self.target(nxt, a2)
            y = rew + discount * (1.0 - term) * (torch.min(q1t, q2t) - alpha * logp2)
        q1, q2 = self.critic(obs, act)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.opt_critic.zero_grad()
        critic_loss.backward()
        self.opt_critic.step()

        a, logp = self.actor(obs)
        q1p, q2p = self.critic(obs, a)
        actor_loss = (alpha * logp - torch.min(q1p, q2p)).mean()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.opt_alpha.zero_grad()
        alpha_loss.backward()
        self.opt_alpha.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters()):
                tp.mul_(1 - self.s.tau).add_(p, alpha=self.s.tau)
        self.updates += 1
        return {"critic": critic_loss.item(), "actor": actor_loss.item(), "alpha": alpha.item()}
