import VoiceRelay
