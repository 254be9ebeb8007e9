"""Reports: read only the results store; write Markdown and one self-contained HTML file."""
from .build import build_report, leaderboard, leaderboard_text, load_results

__all__ = ["build_report", "leaderboard", "leaderboard_text", "load_results"]
