"""Detector networks: the hybrid GNN-LSTM and its parts."""
