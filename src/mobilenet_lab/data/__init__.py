"""Data modules selectable as ``data=<name>``, one module and one ``conf/data/`` config each:
``digits.py``, ``cifar.py``, ``imagefolder.py``, ``synthetic.py``. Configs name the module
itself, so a digits run never imports torchvision or timm."""
