"""Go-Explore over any Forage env: an archive of cells, return by snapshot or replay, explore with any policy."""

from .archive import Archive, ArchiveStartSampler, Cell, SelectionWeights, StartState
from .cells import cell_of, normalise_observation
from .judge import InterestJudge, JudgeError, OpenAIJudge
from .policies import ChatExplorePolicy, ExplorePolicy, RandomCommandPolicy
from .run import ExploreResult, GoExploreConfig, go_explore, plain_explore

__all__ = [
    "Archive", "ArchiveStartSampler", "Cell", "SelectionWeights", "StartState", "cell_of", "normalise_observation", "InterestJudge",
    "JudgeError", "OpenAIJudge", "ChatExplorePolicy", "ExplorePolicy", "RandomCommandPolicy", "ExploreResult",
    "GoExploreConfig", "go_explore", "plain_explore",
]
