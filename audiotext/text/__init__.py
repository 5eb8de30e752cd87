"""Text-side models: loading (Hugging Face and legacy KorBERT), domain pre-training (masked LM)
and fine-tuning the text-only classifier.

Only the loader is imported here: `audiotext.features.text` uses it, and the training modules
import `audiotext.features.text` in turn.
"""

from audiotext.text.loading import LoadReport, load_text_encoder, load_text_encoder_with_report

__all__ = ["LoadReport", "load_text_encoder", "load_text_encoder_with_report"]
