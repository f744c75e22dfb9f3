"""GitHub: an organisation's repositories, and the issues and pull requests of each."""
