"""Sentences in 12 scripts for parity tests (written for this project)."""
SAMPLE = {
    "latin": [
        "How many people live in Berlin?", "The river flows slowly through the old town.",
        "Wie viele Menschen leben in Berlin?", "La photosynthèse transforme la lumière en énergie chimique.",
        "¿Cuál es la montaña más alta de América del Sur?", "Berlin'de kaç kişi yaşıyor?",
        "Ở Berlin có bao nhiêu người sinh sống?", "Ａｂｃ full-width letters and ligatures ﬁ ﬂ №5 ½",
    ],
    "cyrillic": ["Сколько людей живёт в Берлине?", "Река медленно течёт через старый город.", "Фотосинтез превращает свет в энергию."],
    "greek": ["Πόσοι άνθρωποι ζουν στο Βερολίνο;", "Ο ποταμός κυλά αργά μέσα από την παλιά πόλη.", "Η φωτοσύνθεση μετατρέπει το φως σε ενέργεια."],
    "arabic": ["كم عدد سكان برلين؟", "يتدفق النهر ببطء عبر المدينة القديمة.", "يحول التمثيل الضوئي الضوء إلى طاقة كيميائية."],
    "devanagari": ["बर्लिन में कितने लोग रहते हैं?", "नदी पुराने शहर से धीरे-धीरे बहती है।", "प्रकाश संश्लेषण प्रकाश को ऊर्जा में बदलता है।"],
    "thai": ["กรุงเบอร์ลินมีประชากรเท่าไร", "แม่น้ำไหลช้าๆ ผ่านเมืองเก่า", "การสังเคราะห์ด้วยแสงเปลี่ยนแสงเป็นพลังงาน"],
    "han": ["柏林有多少人口？", "河水缓缓流过古城。", "光合作用把光能转化为化学能。"],
    "japanese": ["ベルリンには何人住んでいますか？", "川は旧市街をゆっくりと流れる。", "光合成は光を化学エネルギーに変える。"],
    "hangul": ["베를린에는 몇 명이 살고 있나요?", "강물이 구시가지를 천천히 흐른다.", "광합성은 빛을 화학 에너지로 바꾼다."],
    "hebrew": ["כמה אנשים גרים בברלין?", "הנהר זורם לאט דרך העיר העתיקה.", "פוטוסינתזה הופכת אור לאנרגיה כימית."],
    "georgian": ["რამდენი ადამიანი ცხოვრობს ბერლინში?", "მდინარე ნელა მიედინება ძველ ქალაქში."],
    "mixed": ["  spaces   and\ttabs  ", "emoji 🙂 and symbols ©®™ → ∞", "numbers 3.14159 and 1,000,000", "x"],
}
SENTENCES = [sentence for sentences in SAMPLE.values() for sentence in sentences]
