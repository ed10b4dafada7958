"""HF encoder safety classifiers: ``finetune`` (the paper's recipe) and ``hf`` (a released model).

(Backends registered in ``datagen.classifier.BACKENDS``.)
"""
