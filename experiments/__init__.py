"""Experiments that measure ml_adv against published results (see EXPERIMENTS.md)."""
