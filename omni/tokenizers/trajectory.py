"""RL trajectories -> (return-to-go, state, action) tokens (Decision Transformer), or (state, action) tokens
(behaviour cloning: the same tokens with the returns left out).

Shape legend
    B batch   K steps in the window   S state_dim   A act_dim (action size, or number of discrete actions)
    P tokens per state (1 for a vector; the patches of an image with a ``state_encoder``)
    T = R + P + 1 tokens per step (R = 1 with returns, 0 without)   N = T * K tokens   D width
    Token order within a step: R_t (if returns), the P state tokens of s_t, a_t.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from omni.dropout import Dropout
from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["TrajectoryTokenizer"]

TOKENS_PER_STEP = 3  # return-to-go, state, action (the default layout)
RETURN, STATE, ACTION = range(TOKENS_PER_STEP)  # modality index of each token type (and offset in the default layout)


class TrajectoryTokenizer(nn.Module):
    """Embed a window of K steps as tokens, as the Decision Transformer does (Chen et al. 2021).

    Each token type has its own embedding (a linear layer; an ``nn.Embedding`` for discrete actions); a learned
    timestep embedding is added to every token of a step, and one LayerNorm is applied to all of them
    (DT's ``embed_ln``). The policy predicts a_t from the output at the (last) state token of step t:
    ``state_positions``.

    ``returns=False`` leaves the return-to-go tokens out: behaviour cloning with the same embeddings and trunk.
    ``state_encoder`` (e.g. ``ImagePatchTokenizer``) turns each observation into P tokens (image patches) in place of
    the one linear state embedding.

    ``modality`` is 0/1/2 for return/state/action in every layout; ``group`` and ``pos`` are the episode timestep of
    the step (so causal-by-group attention works across windows); ``pad`` repeats the step mask over its tokens.
    """

    modalities: tuple[str, ...] = ("return", "state", "action")

    def __init__(
        self,
        dim: int,
        state_dim: int,
        act_dim: int,
        discrete_actions: bool = False,
        max_timestep: int = 1000,
        returns: bool = True,
        state_encoder: Callable[[int], nn.Module] | None = None,
        embed_dropout: float = 0.0,
    ) -> None:
        """
        Args:
            dim: model width D.
            state_dim: size S of a state vector (with a ``state_encoder``: the observation's channels, unchecked
                here; the encoder checks its input).
            act_dim: size A of a continuous action, or the number of discrete actions.
            discrete_actions: actions are (B, K) integer indices in [0, act_dim) instead of (B, K, A) floats.
            max_timestep: size of the timestep table; timesteps must lie in [0, max_timestep) (DT's max_ep_len).
            returns: emit a return-to-go token per step (Decision Transformer); False for behaviour cloning.
            state_encoder: given ``dim``, a module mapping a batch of observations (B*K, *obs) to ``Tokens`` with
                x (B*K, P, D) and a ``grid`` (h, w) attribute (P = h*w), e.g. ``ImagePatchTokenizer``; None embeds
                vector states with one linear layer.
            embed_dropout: dropout on the embeddings after the LayerNorm (CORL's ``embedding_dropout``, GPT-2's
                ``embd_pdrop``).
        """
        super().__init__()
        for name, value in (("dim", dim), ("state_dim", state_dim), ("act_dim", act_dim)):
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        if max_timestep < 1:
            raise ValueError(f"max_timestep: expected a positive int, got {max_timestep}")
        self.dim = dim
        self.state_dim = state_dim
        self.act_dim = act_dim
        self.discrete_actions = discrete_actions
        self.max_timestep = max_timestep
        self.returns = returns
        if returns:
            self.embed_return = nn.Linear(1, dim)
        if state_encoder is None:
            self.embed_state: nn.Module = nn.Linear(state_dim, dim)
            self.state_tokens = 1
        else:
            self.embed_state = state_encoder(dim)
            grid = getattr(self.embed_state, "grid", None)
            if grid is None:
                raise ValueError(
                    f"state_encoder: expected a module with a `grid` (h, w) of tokens per observation, got "
                    f"{type(self.embed_state).__name__} without one"
                )
            self.state_tokens = math.prod(grid)
        self.embed_action: nn.Module = nn.Embedding(act_dim, dim) if discrete_actions else nn.Linear(act_dim, dim)
        self.embed_timestep = nn.Embedding(max_timestep, dim)
        self.embed_ln = nn.LayerNorm(dim)
        self.embed_drop = Dropout(embed_dropout)

    # ------------------------------------------------------------------ token layout
    @property
    def tokens_per_step(self) -> int:
        """T: tokens of one step (3 for DT with vector states, 2 for behaviour cloning)."""
        return int(self.returns) + self.state_tokens + 1

    def _offsets(self, num_steps: int, offset: int) -> Tensor:
        return torch.arange(num_steps) * self.tokens_per_step + offset

    def return_positions(self, num_steps: int) -> Tensor:
        """(K,) long token indices of the return-to-go tokens: 0, 3, 6, ... (empty without returns)."""
        return self._offsets(num_steps, 0) if self.returns else torch.zeros(0, dtype=torch.long)

    def state_positions(self, num_steps: int) -> Tensor:
        """(K,) long token indices of each step's last state token: 1, 4, 7, ... in DT's layout (DT predicts a_t
        from the output there)."""
        return self._offsets(num_steps, int(self.returns) + self.state_tokens - 1)

    def action_positions(self, num_steps: int) -> Tensor:
        """(K,) long token indices of the action tokens: 2, 5, 8, ... in DT's layout."""
        return self._offsets(num_steps, self.tokens_per_step - 1)

    # ------------------------------------------------------------------ checks
    def _check(
        self, returns_to_go: object, states: object, actions: object, timesteps: object, mask: object
    ) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor | None]:
        if self.state_tokens == 1 and isinstance(self.embed_state, nn.Linear):
            states = check_tensor("states", states, ndim=3, layout="(B, K, S)", sizes={-1: self.state_dim})
        else:
            states = check_tensor("states", states, ndim=(3, 4, 5), layout="(B, K, *observation)")
        b, k = states.shape[:2]
        if not self.returns:
            if returns_to_go is not None:
                raise ValueError("returns_to_go: expected None (this tokenizer has returns=False), got a value")
        else:
            returns_to_go = check_tensor("returns_to_go", returns_to_go, ndim=(2, 3), layout="(B, K) or (B, K, 1)")
            if returns_to_go.ndim == 3:
                check_tensor("returns_to_go", returns_to_go, ndim=3, layout="(B, K, 1)", sizes={-1: 1})
                returns_to_go = returns_to_go[..., 0]
        if self.discrete_actions:
            actions = check_tensor("actions", actions, ndim=(2, 3), layout="(B, K) or (B, K, 1)", dtype="int")
            if actions.ndim == 3:
                check_tensor("actions", actions, ndim=3, layout="(B, K, 1)", dtype="int", sizes={-1: 1})
                actions = actions[..., 0]
        else:
            actions = check_tensor("actions", actions, ndim=3, layout="(B, K, A)", sizes={-1: self.act_dim})
        timesteps = check_tensor("timesteps", timesteps, ndim=2, layout="(B, K)", dtype="int")
        if mask is not None:
            mask = check_tensor("mask", mask, ndim=2, layout="(B, K)", dtype="bool")
        named = {"returns_to_go": returns_to_go, "actions": actions, "timesteps": timesteps, "mask": mask}
        for name, t in named.items():
            if t is not None and tuple(t.shape[:2]) != (b, k):
                raise ValueError(f"{name}: expected (B, K) = {(b, k)} to match states, got shape {tuple(t.shape)}")
        if self.discrete_actions:
            lo, hi = int(actions.min()), int(actions.max())
            if lo < 0 or hi >= self.act_dim:
                raise ValueError(f"actions: expected indices in [0, act_dim={self.act_dim}), got min {lo}, max {hi}")
        lo, hi = int(timesteps.min()), int(timesteps.max())
        if lo < 0 or hi >= self.max_timestep:
            raise ValueError(
                f"timesteps: expected values in [0, max_timestep={self.max_timestep}), got min {lo}, max {hi}"
            )
        return returns_to_go, states, actions, timesteps, mask

    # ------------------------------------------------------------------ forward
    def embed_states(self, states: Tensor) -> Tensor:
        """(B, K, S) or (B, K, *observation) -> (B, K, P, D) state token embeddings."""
        if self.state_tokens == 1 and isinstance(self.embed_state, nn.Linear):
            return self.embed_state(states.to(self.embed_state.weight.dtype))[:, :, None]
        b = states.shape[0]
        tokens = self.embed_state(rearrange(states, "b k ... -> (b k) ..."))
        x = tokens.x if isinstance(tokens, Tokens) else tokens
        if x.ndim != 3 or x.shape[1] != self.state_tokens:
            raise ValueError(
                f"state_encoder: expected (B*K, P={self.state_tokens}, D) tokens per observation, got shape "
                f"{tuple(x.shape)}"
            )
        return rearrange(x, "(b k) p d -> b k p d", b=b)

    def forward(
        self,
        returns_to_go: Tensor | None,
        states: Tensor,
        actions: Tensor,
        timesteps: Tensor,
        mask: Tensor | None = None,
    ) -> Tokens:
        """Tokenize a window of K steps.

        Args:
            returns_to_go: (B, K) or (B, K, 1) float return still to collect from each step; None (required) when
                the tokenizer has ``returns=False``.
            states: (B, K, S) float, or (B, K, *observation) (e.g. (B, K, C, H, W)) with a ``state_encoder``.
            actions: (B, K, A) float, or (B, K) / (B, K, 1) integer indices when ``discrete_actions``.
            timesteps: (B, K) integer episode timestep of each step, in [0, max_timestep).
            mask: (B, K) bool, True where the step is real; None = all real.
        Returns:
            Tokens with x (B, T*K, D) ordered R_1, s_1, a_1, R_2, ... (DT, T = 3) or s_1, a_1, s_2, ... (no returns,
            T = 2), each s_t being P tokens with a ``state_encoder``; modality 0/1/2 = return/state/action;
            pos (B, T*K, 1) and group (B, T*K) = the step's timestep; pad the step mask repeated T times.
        """
        returns_to_go, states, actions, timesteps, mask = self._check(returns_to_go, states, actions, timesteps, mask)
        dtype = self.embed_timestep.weight.dtype
        timesteps = timesteps.long()
        time = self.embed_timestep(timesteps)[:, :, None]  # (B, K, 1, D)
        parts, kinds = [], []
        if returns_to_go is not None:
            parts.append(self.embed_return(returns_to_go.to(dtype)[..., None])[:, :, None])
            kinds.append(RETURN)
        parts.append(self.embed_states(states).to(dtype))
        kinds += [STATE] * self.state_tokens
        act_in = actions.long() if self.discrete_actions else actions.to(dtype)
        parts.append(self.embed_action(act_in)[:, :, None])
        kinds.append(ACTION)
        x = torch.cat(parts, dim=2) + time  # (B, K, T, D) in RETURN, STATE..., ACTION order
        x = self.embed_drop(self.embed_ln(rearrange(x, "b k t d -> b (k t) d")))
        per_step = len(kinds)

        def per_token(t: Tensor) -> Tensor:  # (B, K) -> (B, T*K), each step's value on its T tokens
            return repeat(t, "b k -> b (k t)", t=per_step)

        k = timesteps.shape[1]
        modality = torch.tensor(kinds, device=x.device).repeat(k)  # (T*K,) = 0, 1, 2, 0, 1, 2, ... for DT
        group = per_token(timesteps)
        pad = per_token(mask.to(x.device)) if mask is not None else None
        return Tokens.create(x, modality=modality, pos=group.float()[..., None], pad=pad, group=group)
