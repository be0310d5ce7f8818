"""Offline speech synthesis with eSpeak NG through its C API (ctypes), plus the demo sentence lists.

The library and its voice data come from the `espeakng_loader` wheel, so nothing is downloaded.
eSpeak NG keeps global state that `espeak_Terminate` does not reset (pitch-flutter phase, gain
control, noise generators), so two identical requests in one process would give slightly different
waveforms. To make every utterance a pure function of (text, voice, seed), each call loads a
private copy of the shared library, synthesizes, and unloads it again (about 10 ms). A module lock
serialises calls: the C library is not re-entrant and its breath noise uses the C runtime's global
`rand()`.

Output is 16-bit audio at 22050 Hz (`ESPEAK_SAMPLE_RATE`), returned as float32 in [-1, 1).
"""

from __future__ import annotations

import _ctypes
import ctypes
import ctypes.util
import dataclasses
import os
import shutil
import tempfile
import threading
import weakref

import numpy as np

ESPEAK_SAMPLE_RATE = 22050  # Hz, eSpeak NG's native output rate

# Demo language code (as in the official utt2lang) -> eSpeak NG language name.
ESPEAK_LANGUAGES = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "zho": "cmn"}

# C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of calling exit() when data is missing
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_PARAM_RATE = 1  # words per minute, 80..450
_PARAM_PITCH = 3  # base pitch, 0..100 (50 = voice default)
_PARAM_RANGE = 4  # pitch range, 0..100 (50 = voice default)

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()


class SpeechSynthError(RuntimeError):
    """eSpeak NG cannot be loaded, a voice is unknown, or synthesis failed."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice: language + variant (voices/!v) + prosody settings."""

    language: str  # eSpeak language name: "en", "de", "fr", "es", "cmn", ...
    variant: str = ""  # variant file in espeak-ng-data/voices/!v, e.g. "f3", "m3", "whisper"
    pitch: int = 50  # base pitch, 0..100
    pitch_range: int = 50  # intonation range, 0..100
    rate_wpm: int = 175  # speaking rate, words per minute (80..450)

    @property
    def name(self) -> str:
        """The name passed to espeak_SetVoiceByName, e.g. "en+f3"."""
        return f"{self.language}+{self.variant}" if self.variant else self.language


def _default_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:
        raise SpeechSynthError(
            "eSpeak NG is not installed: the package `espeakng_loader` (extra `demo`) ships the "
            "library and its data; install it or pass library_path and data_path"
        ) from e
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except Exception as e:  # the loader raises RuntimeError when its data folder is missing
        raise SpeechSynthError(f"espeakng_loader cannot locate eSpeak NG ({e})") from e


def voice_variants(data_path: str | None = None) -> tuple[str, ...]:
    """Names of the voice variants shipped in the data folder (espeak-ng-data/voices/!v)."""
    if data_path is None:
        data_path = _default_paths()[1]
    folder = os.path.join(data_path, "voices", "!v")
    if not os.path.isdir(folder):
        return ()
    return tuple(sorted(os.listdir(folder)))


def _unload(handle: int) -> None:
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


class SpeechSynthesizer:
    """Text -> float32 speech at 22050 Hz with eSpeak NG; deterministic per (text, voice, seed).

    Use as a context manager or call `close()` to delete the private library copy (else at exit).
    """

    sample_rate = ESPEAK_SAMPLE_RATE

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        if library_path is None or data_path is None:
            default_library, default_data = _default_paths()
            library_path = library_path or default_library
            data_path = data_path or default_data
        if not os.path.isfile(library_path):
            raise SpeechSynthError(f"eSpeak NG library not found at {library_path}")
        if not os.path.isdir(os.path.join(data_path, "voices")):
            raise SpeechSynthError(f"{data_path} is not an espeak-ng-data folder (no voices/)")
        self.data_path = data_path
        # A private copy: unloading it really frees the library's static state (another user of the
        # original path in this process would otherwise keep it loaded).
        self._tmp_dir = tempfile.mkdtemp(prefix="urgent_espeak_")
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp_dir, True)
        self._library_path = os.path.join(self._tmp_dir, os.path.basename(library_path))
        shutil.copy2(library_path, self._library_path)
        libc_name = ctypes.util.find_library("c")
        try:
            self._libc = ctypes.CDLL(libc_name) if libc_name else None
        except OSError:
            self._libc = None
        # Fail early with a clear message rather than at the first utterance.
        with _LOCK:
            lib = self._load()
            _unload(lib._handle)

    def close(self) -> None:
        """Delete the private copy of the library."""
        self._finalizer()

    def __enter__(self) -> SpeechSynthesizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load(self) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(self._library_path)
        except OSError as e:
            raise SpeechSynthError(f"cannot load eSpeak NG from {self._library_path}: {e}") from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        return lib

    def synthesize(self, text: str, voice: Voice, seed: int = 0) -> np.ndarray:
        """Speak `text` (any script the language supports) -> float32 [num_samples] at 22050 Hz.

        `seed` seeds the synthesizer's noise generators (breathy and whispered voices).
        """
        if not text.strip():
            raise SpeechSynthError("cannot synthesize empty text")
        if not self._finalizer.alive:
            raise SpeechSynthError("synthesizer is closed")
        chunks: list[np.ndarray] = []

        def collect(wav, num_samples, events):
            if wav and num_samples > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0  # continue

        callback = _SYNTH_CALLBACK(collect)  # must outlive the synthesis call
        data = text.encode("utf-8") + b"\0"
        with _LOCK:
            lib = self._load()
            try:
                rate = lib.espeak_Initialize(
                    _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), _INITIALIZE_DONT_EXIT
                )
                if rate != ESPEAK_SAMPLE_RATE:
                    raise SpeechSynthError(
                        f"espeak_Initialize failed with data {self.data_path} (returned {rate})"
                    )
                lib.espeak_SetSynthCallback(callback)
                if lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                    raise SpeechSynthError(
                        f"unknown eSpeak NG voice {voice.name!r} (languages are in "
                        f"{self.data_path}/lang, variants in {self.data_path}/voices/!v)"
                    )
                for param, value in (
                    (_PARAM_RATE, voice.rate_wpm),
                    (_PARAM_PITCH, voice.pitch),
                    (_PARAM_RANGE, voice.pitch_range),
                ):
                    if lib.espeak_SetParameter(param, int(value), 0) != _EE_OK:
                        raise SpeechSynthError(f"espeak_SetParameter({param}, {value}) failed")
                seed = int(seed) % (2**31)
                if hasattr(lib, "espeak_ng_SetRandSeed"):
                    lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
                if self._libc is not None:
                    self._libc.srand(ctypes.c_uint(seed))
                status = lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                if status != _EE_OK:
                    raise SpeechSynthError(f"espeak_Synth failed with status {status} for {text!r}")
                lib.espeak_Synchronize()
                lib.espeak_Terminate()
            finally:
                _unload(lib._handle)
        if not chunks:
            raise SpeechSynthError(f"eSpeak NG produced no audio for {text!r} with {voice.name}")
        return np.concatenate(chunks).astype(np.float32) / 32768.0


# Demo sentences, written for this project: everyday statements of 8-20 words, so that an utterance
# lasts about 2-5 s at normal speed. The corpus builder splits each list into disjoint train,
# validation and babble parts.
SENTENCES: dict[str, tuple[str, ...]] = {
    "eng": (
        "The train to the airport leaves every twenty minutes from the second platform.",
        "Could you please close the window before the rain comes in?",
        "My grandmother grows tomatoes, beans and a few sunflowers behind her house.",
        "We stayed up late talking about the summer we spent by the lake.",
        "The meeting has been moved to Thursday afternoon because of the holiday.",
        "He forgot his umbrella on the bus and walked home in the storm.",
        "Fresh bread is delivered to the corner shop early every morning.",
        "If you turn left at the bakery, the library is right across the street.",
        "The children built a small wooden boat and sailed it on the pond.",
        "Please remember to switch off the lights when you leave the office.",
        "The museum opens at nine and closes at six on weekdays.",
        "She practised the piano for an hour before the concert began.",
        "Our neighbours are painting their fence a bright shade of green.",
        "The soup needs a little more salt and a pinch of black pepper.",
        "A strong wind knocked over the bicycles parked outside the station.",
        "I would like two tickets for the evening show, please.",
        "The mountain road was closed for three days after the heavy snowfall.",
        "They found an old map hidden between the pages of a novel.",
        "The doctor said he should drink more water and sleep a bit longer.",
        "Every Sunday we cook a large dinner and invite a few friends.",
        "The river rose quickly after a week of steady rain.",
        "Can you tell me how long it takes to walk to the harbour?",
        "The new bridge will connect the two villages by the end of next year.",
        "Most of the birds had already flown south when the first frost arrived.",
        "He repaired the old radio with parts from a box in the garage.",
        "Nobody expected the quiet student to win the chess tournament.",
    ),
    "deu": (
        "Der Zug nach München fährt heute leider mit zwanzig Minuten Verspätung ab.",
        "Kannst du bitte das Fenster schließen, bevor es anfängt zu regnen?",
        "Meine Großmutter backt jeden Sonntag einen Apfelkuchen für die ganze Familie.",
        "Im Sommer fahren wir oft mit dem Fahrrad an den See.",
        "Die Besprechung wurde auf Donnerstagnachmittag verschoben.",
        "Er hat seinen Regenschirm im Bus vergessen und ist nass geworden.",
        "Das Museum ist dienstags bis sonntags von zehn bis achtzehn Uhr geöffnet.",
        "Wenn du an der Bäckerei links abbiegst, siehst du die Bibliothek.",
        "Die Kinder haben im Garten ein kleines Baumhaus gebaut.",
        "Bitte vergiss nicht, das Licht auszuschalten, wenn du gehst.",
        "Auf dem Markt gibt es frisches Gemüse aus der Region.",
        "Sie hat eine Stunde lang Klavier geübt, bevor das Konzert begann.",
        "Unsere Nachbarn streichen ihren Zaun in einem hellen Grün.",
        "Die Suppe braucht noch etwas Salz und ein wenig Pfeffer.",
        "Ein starker Wind hat die Fahrräder vor dem Bahnhof umgeworfen.",
        "Ich hätte gern zwei Karten für die Abendvorstellung.",
        "Die Passstraße war nach dem Schneefall drei Tage lang gesperrt.",
        "In einem alten Buch fanden sie eine vergessene Landkarte.",
        "Der Arzt meinte, er solle mehr Wasser trinken und früher schlafen gehen.",
        "Am Wochenende kochen wir gern zusammen mit Freunden.",
        "Nach einer Woche Regen ist der Fluss stark angestiegen.",
        "Wie lange braucht man zu Fuß bis zum Hafen?",
        "Die neue Brücke soll die beiden Dörfer im nächsten Jahr verbinden.",
        "Als der erste Frost kam, waren die meisten Vögel schon fortgezogen.",
        "Er hat das alte Radio mit Teilen aus der Garage repariert.",
        "Niemand hatte erwartet, dass die stille Schülerin das Turnier gewinnt.",
    ),
    "fra": (
        "Le train pour l'aéroport part toutes les vingt minutes du deuxième quai.",
        "Pourrais-tu fermer la fenêtre avant que la pluie n'arrive?",
        "Ma grand-mère cultive des tomates et des haricots derrière sa maison.",
        "Nous avons parlé tard dans la nuit de nos vacances au bord du lac.",
        "La réunion a été déplacée à jeudi après-midi à cause du jour férié.",
        "Il a oublié son parapluie dans le bus et il est rentré sous l'orage.",
        "Le pain frais arrive à l'épicerie du coin tous les matins.",
        "Si tu tournes à gauche après la boulangerie, la bibliothèque est en face.",
        "Les enfants ont construit un petit bateau en bois pour l'étang.",
        "N'oublie pas d'éteindre la lumière en quittant le bureau.",
        "Le musée ouvre à neuf heures et ferme à dix-huit heures en semaine.",
        "Elle a répété au piano pendant une heure avant le concert.",
        "Nos voisins repeignent leur clôture d'un vert très clair.",
        "La soupe manque un peu de sel et d'une pincée de poivre.",
        "Un vent violent a renversé les vélos garés devant la gare.",
        "Je voudrais deux places pour la séance de ce soir, s'il vous plaît.",
        "La route du col est restée fermée trois jours après la neige.",
        "Ils ont trouvé une vieille carte cachée entre les pages d'un roman.",
        "Le médecin lui a conseillé de boire plus d'eau et de dormir davantage.",
        "Chaque dimanche, nous préparons un grand repas pour quelques amis.",
        "La rivière a monté très vite après une semaine de pluie.",
        "Pouvez-vous me dire combien de temps il faut pour aller au port à pied?",
        "Le nouveau pont reliera les deux villages d'ici la fin de l'année prochaine.",
        "La plupart des oiseaux étaient déjà partis quand les premières gelées sont arrivées.",
        "Il a réparé la vieille radio avec des pièces trouvées au garage.",
        "Personne ne pensait que l'élève si discrète gagnerait le tournoi d'échecs.",
    ),
    "spa": (
        "El tren al aeropuerto sale cada veinte minutos desde el segundo andén.",
        "¿Podrías cerrar la ventana antes de que empiece a llover?",
        "Mi abuela cultiva tomates, judías y algunos girasoles detrás de su casa.",
        "Nos quedamos hablando hasta tarde sobre el verano que pasamos en el lago.",
        "La reunión se ha trasladado al jueves por la tarde por el día festivo.",
        "Se olvidó el paraguas en el autobús y volvió a casa bajo la tormenta.",
        "El pan recién hecho llega a la tienda de la esquina cada mañana.",
        "Si giras a la izquierda en la panadería, la biblioteca está enfrente.",
        "Los niños construyeron un pequeño barco de madera para el estanque.",
        "Por favor, recuerda apagar las luces cuando salgas de la oficina.",
        "El museo abre a las nueve y cierra a las seis entre semana.",
        "Ensayó al piano durante una hora antes de que empezara el concierto.",
        "Nuestros vecinos están pintando la valla de un verde muy claro.",
        "A la sopa le falta un poco de sal y una pizca de pimienta.",
        "Un viento muy fuerte tiró las bicicletas aparcadas frente a la estación.",
        "Quería dos entradas para la sesión de esta noche, por favor.",
        "La carretera del puerto estuvo cerrada tres días después de la nevada.",
        "Encontraron un mapa antiguo escondido entre las páginas de una novela.",
        "El médico le dijo que bebiera más agua y que durmiera un poco más.",
        "Todos los domingos cocinamos una cena grande e invitamos a unos amigos.",
        "El río creció muy deprisa después de una semana de lluvia.",
        "¿Me puede decir cuánto se tarda andando hasta el puerto?",
        "El nuevo puente unirá los dos pueblos a finales del año que viene.",
        "Casi todos los pájaros se habían ido al sur cuando llegó la primera helada.",
        "Arregló la vieja radio con piezas de una caja que había en el garaje.",
        "Nadie esperaba que la alumna más callada ganara el torneo de ajedrez.",
    ),
    "zho": (
        "去机场的火车每二十分钟从第二站台出发一次。",
        "下雨之前请你把窗户关上好吗？",
        "我奶奶在房子后面种了西红柿、豆角和几棵向日葵。",
        "我们聊到很晚，说起了那年夏天在湖边的日子。",
        "因为放假，会议改到了星期四下午。",
        "他把雨伞忘在公交车上，只好冒着大雨走回家。",
        "每天早上都有新鲜的面包送到街角的小店。",
        "在面包店向左拐，图书馆就在马路对面。",
        "孩子们做了一条小木船，放在池塘里漂。",
        "离开办公室的时候，请记得把灯关掉。",
        "博物馆工作日早上九点开门，下午六点关门。",
        "音乐会开始之前，她练了一个小时的钢琴。",
        "我们的邻居正在把篱笆刷成浅绿色。",
        "这汤还需要再放一点盐和一点胡椒。",
        "一阵大风把车站外面的自行车都吹倒了。",
        "请给我两张今天晚上的电影票。",
        "下了大雪以后，山路封了整整三天。",
        "他们在一本旧小说里发现了一张地图。",
        "医生说他应该多喝水，多睡一会儿。",
        "每个星期天我们都做一顿丰盛的晚饭，请几个朋友来吃。",
        "下了一个星期的雨，河水涨得很快。",
        "请问走路到港口要多长时间？",
        "新桥明年年底就会把两个村子连起来。",
        "第一场霜来的时候，大部分鸟已经飞到南方去了。",
        "他用车库里找到的零件修好了那台旧收音机。",
        "谁也没想到那个安静的学生赢了象棋比赛。",
    ),
}
