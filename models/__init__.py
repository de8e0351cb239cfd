"""Model families: each one is its linen modules, its config and a family object that
gives the trainer init, losses and samples (the contract: models/family.py)."""
