"""Callbacks that record a trainer's fit the way ``graphscope.watch`` records a loop.

``graphscope.integrations.lightning.GraphscopeCallback`` (PyTorch Lightning's ``Trainer``) and
``graphscope.integrations.hf.GraphscopeCallback`` (Hugging Face ``transformers.Trainer``) each
hold one ``Watch`` over the fit (``fit.TrainerWatch``): entered when training starts, numbered
by the trainer's global step (``Watch.set_step``), left when training ends or fails. Each module
imports its trainer package when imported itself; nothing else in graphscope imports this
package, so neither trainer is ever required (``pip install graphscope[lightning]``, ``[hf]``).

Imports torch and the capture layer (``graphscope.autograd``); never textual.
"""
