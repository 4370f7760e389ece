"""Shipped configs: training recipes, the quickstart, example stage configs and DeepSpeed configs.

Installed as `userlm.recipes`, so `userlm train smollm2-cpu-quickstart` finds a recipe by
name from a wheel as well as from a checkout (`userlm.config.shipped_config`).
"""
