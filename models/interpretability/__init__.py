"""hyplex.models.interpretability: interpretable decisions (issue 17).

``kernel_interpretability``: How to improve the interpretability of kernel learning
(an interpretability index and its trade-off with generalisation for an LS-SVM on barcodes).
``rule_extraction``: How far from automatically interpreting deep learning; A game method
for improving the interpretability of convolution neural network (logic rules read from a
fully connected head).
"""
