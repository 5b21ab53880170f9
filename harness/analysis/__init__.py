"""Analysis: pure tables over run folders: summary statistics, leaderboard, plots, markdown, compare."""
