"""MobileNet Lab: a hand-built MobileNet V1 and timm's V2/V3, trained with Lightning + Hydra."""
