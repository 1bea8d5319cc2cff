# servidor.py from "Tema 12. Sockets" (Antonio Villena Martín), kept as a
# real peer for the interoperability tests.
#
# Changes from the tutorial's text: its two typos are fixed (the missing
# `import socket`, and `if name == ' main ':` for `if __name__ == '__main__':`),
# and, so that tests never take a fixed port, an optional port argument is
# read (default 5000, as in the tutorial; 0 takes a free port) and the bound
# address is printed once it listens.
import socket
import sys


def main():
    # Definición del socket del servidor
    host = "127.0.0.1"
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000

    # Instancia del objeto socket
    mySocket = socket.socket()

    # Enlace al socket definido para el servidor
    mySocket.bind((host, port))

    # Establece el número máximo de conexiones entrantes
    mySocket.listen(1)
    print("Escuchando en %s:%d" % mySocket.getsockname(), flush=True)
    # Inicia la escucha
    conn, addr = mySocket.accept()
    # Imprime la dirección del cliente entrante
    print("Conexión desde: " + str(addr))
    # Bucle infinito para procesar la información entrante del cliente
    while True:
        # Decodifica la información entrante y la almacena en la variable 'data'
        data = conn.recv(1024).decode()
        if not data:
            break
        print("desde el usuario conectado: " + str(data))
        # La única operación que realiza es convertir a mayúsculas el texto
        # que envia el cliente
        data = str(data).upper()
        print("enviando: " + str(data))
        # Envia de vuelta al cliente el texto modificado
        conn.send(data.encode())
    # Cierra la conexión
    conn.close()


if __name__ == '__main__':
    main()
