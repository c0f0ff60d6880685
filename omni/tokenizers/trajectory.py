"""RL trajectories -> (return-to-go, state, action) tokens (Decision Transformer).

Shape legend
    B batch   K steps in the window   S state_dim   A act_dim (action size, or number of discrete actions)
    N = 3 * K tokens, ordered R_1, s_1, a_1, R_2, s_2, a_2, ...   D width
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from omni.tokenizers.checks import check_tensor
from omni.tokens import Tokens

__all__ = ["TrajectoryTokenizer"]

TOKENS_PER_STEP = 3  # return-to-go, state, action
RETURN, STATE, ACTION = range(TOKENS_PER_STEP)  # modality index and offset of each token inside its step


class TrajectoryTokenizer(nn.Module):
    """Embed a window of K steps as 3K tokens, as the Decision Transformer does (Chen et al. 2021).

    Each token type has its own embedding (a linear layer; an ``nn.Embedding`` for discrete actions); a learned
    timestep embedding is added to the three tokens of a step, and one LayerNorm is applied to all of them
    (DT's ``embed_ln``). The policy predicts a_t from the output at the state token s_t: ``state_positions``.

    ``modality`` is 0/1/2 for return/state/action; ``group`` and ``pos`` are the episode timestep of the step
    (so causal-by-group attention works across windows); ``pad`` repeats the step mask over the three tokens.
    """

    modalities: tuple[str, ...] = ("return", "state", "action")

    def __init__(
        self,
        dim: int,
        state_dim: int,
        act_dim: int,
        discrete_actions: bool = False,
        max_timestep: int = 1000,
    ) -> None:
        """
        Args:
            dim: model width D.
            state_dim: size S of a state vector.
            act_dim: size A of a continuous action, or the number of discrete actions.
            discrete_actions: actions are (B, K) integer indices in [0, act_dim) instead of (B, K, A) floats.
            max_timestep: size of the timestep table; timesteps must lie in [0, max_timestep) (DT's max_ep_len).
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
        self.embed_return = nn.Linear(1, dim)
        self.embed_state = nn.Linear(state_dim, dim)
        self.embed_action: nn.Module = nn.Embedding(act_dim, dim) if discrete_actions else nn.Linear(act_dim, dim)
        self.embed_timestep = nn.Embedding(max_timestep, dim)
        self.embed_ln = nn.LayerNorm(dim)

    # ------------------------------------------------------------------ token layout
    @staticmethod
    def return_positions(num_steps: int) -> Tensor:
        """(K,) long token indices of the return-to-go tokens: 0, 3, 6, ..."""
        return torch.arange(num_steps) * TOKENS_PER_STEP + RETURN

    @staticmethod
    def state_positions(num_steps: int) -> Tensor:
        """(K,) long token indices of the state tokens: 1, 4, 7, ... (DT predicts a_t from the output at s_t)."""
        return torch.arange(num_steps) * TOKENS_PER_STEP + STATE

    @staticmethod
    def action_positions(num_steps: int) -> Tensor:
        """(K,) long token indices of the action tokens: 2, 5, 8, ... (for predicting the next state/return)."""
        return torch.arange(num_steps) * TOKENS_PER_STEP + ACTION

    # ------------------------------------------------------------------ checks
    def _check(
        self, returns_to_go: object, states: object, actions: object, timesteps: object, mask: object
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        states = check_tensor("states", states, ndim=3, layout="(B, K, S)", sizes={-1: self.state_dim})
        b, k = states.shape[:2]
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
    def forward(
        self,
        returns_to_go: Tensor,
        states: Tensor,
        actions: Tensor,
        timesteps: Tensor,
        mask: Tensor | None = None,
    ) -> Tokens:
        """Tokenize a window of K steps.

        Args:
            returns_to_go: (B, K) or (B, K, 1) float return still to collect from each step.
            states: (B, K, S) float.
            actions: (B, K, A) float, or (B, K) / (B, K, 1) integer indices when ``discrete_actions``.
            timesteps: (B, K) integer episode timestep of each step, in [0, max_timestep).
            mask: (B, K) bool, True where the step is real; None = all real.
        Returns:
            Tokens with x (B, 3K, D) ordered R_1, s_1, a_1, R_2, ...; modality 0/1/2 = return/state/action;
            pos (B, 3K, 1) and group (B, 3K) = the step's timestep; pad the step mask repeated ×3.
        """
        returns_to_go, states, actions, timesteps, mask = self._check(returns_to_go, states, actions, timesteps, mask)
        dtype = self.embed_state.weight.dtype
        timesteps = timesteps.long()
        time = self.embed_timestep(timesteps)  # (B, K, D)
        ret = self.embed_return(returns_to_go.to(dtype)[..., None]) + time
        state = self.embed_state(states.to(dtype)) + time
        act_in = actions.long() if self.discrete_actions else actions.to(dtype)
        action = self.embed_action(act_in) + time
        x = torch.stack([ret, state, action], dim=2)  # (B, K, 3, D) in RETURN, STATE, ACTION order
        x = self.embed_ln(rearrange(x, "b k three d -> b (k three) d"))

        def per_token(t: Tensor) -> Tensor:  # (B, K) -> (B, 3K), each step's value on its three tokens
            return t.repeat_interleave(TOKENS_PER_STEP, dim=1)

        k = timesteps.shape[1]
        modality = torch.arange(TOKENS_PER_STEP, device=x.device).repeat(k)  # (3K,) = 0, 1, 2, 0, 1, 2, ...
        group = per_token(timesteps)
        pad = per_token(mask.to(x.device)) if mask is not None else None
        return Tokens.create(x, modality=modality, pos=group.float()[..., None], pad=pad, group=group)
